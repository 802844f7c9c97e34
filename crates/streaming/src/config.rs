//! The `[streaming]` table of criusd's configuration.
//!
//! Every key is optional (`#[serde(default)]`) and unknown keys are refused; the key
//! names are part of criusd's configuration format and do not change.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The streaming server's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamingConfig {
    /// Listen address (an IP literal); unspecified (`0.0.0.0`, `::`) listens
    /// everywhere and makes URLs name loopback.
    pub address: String,
    /// Listen port; 0 picks a free one at bind time.
    pub port: u16,
    /// PEM certificate chain; empty (with `tls_key_file` empty) means plain HTTP.
    pub tls_cert_file: PathBuf,
    /// PEM private key for `tls_cert_file`.
    pub tls_key_file: PathBuf,
    /// Seconds a URL stays usable.
    pub token_ttl_secs: u64,
    /// Seconds a client has to open the streams it asked for.
    pub stream_creation_timeout_secs: u64,
    /// Seconds without traffic either way after which a stream is closed.
    pub idle_timeout_secs: u64,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        StreamingConfig {
            address: "127.0.0.1".into(),
            port: 0,
            tls_cert_file: PathBuf::new(),
            tls_key_file: PathBuf::new(),
            token_ttl_secs: 60,
            stream_creation_timeout_secs: 30,
            idle_timeout_secs: 14_400,
        }
    }
}

/// A `[streaming]` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config key `{key}`: {message}")]
pub struct InvalidConfig {
    /// The full key, e.g. `streaming.address`.
    pub key: &'static str,
    /// What is wrong with its value.
    pub message: String,
}

fn invalid(key: &'static str, message: impl Into<String>) -> InvalidConfig {
    InvalidConfig {
        key,
        message: message.into(),
    }
}

impl StreamingConfig {
    /// The listen address, checked.
    pub(crate) fn ip(&self) -> Result<IpAddr, InvalidConfig> {
        self.address
            .parse()
            .map_err(|e| invalid("streaming.address", format!("{:?}: {e}", self.address)))
    }

    /// Checks every value: the address parses, the TLS files come as a pair, and no
    /// timeout is zero.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        self.ip()?;
        let cert = self.tls_cert_file.as_os_str().is_empty();
        let key = self.tls_key_file.as_os_str().is_empty();
        if cert != key {
            return Err(invalid(
                "streaming.tls_cert_file",
                "tls_cert_file and tls_key_file must be given together",
            ));
        }
        for (key, v) in [
            ("streaming.token_ttl_secs", self.token_ttl_secs),
            (
                "streaming.stream_creation_timeout_secs",
                self.stream_creation_timeout_secs,
            ),
            ("streaming.idle_timeout_secs", self.idle_timeout_secs),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_an_empty_table_is_the_defaults() {
        StreamingConfig::default().validate().unwrap();
        let parsed: StreamingConfig = toml::from_str("").unwrap();
        assert_eq!(parsed, StreamingConfig::default());
    }

    #[test]
    fn the_keys_are_the_documented_ones() {
        let parsed: StreamingConfig = toml::from_str(
            "address = \"::\"\nport = 10010\ntls_cert_file = \"/c\"\ntls_key_file = \"/k\"\n\
             token_ttl_secs = 5\nstream_creation_timeout_secs = 6\nidle_timeout_secs = 7\n",
        )
        .unwrap();
        assert_eq!(
            parsed,
            StreamingConfig {
                address: "::".into(),
                port: 10010,
                tls_cert_file: "/c".into(),
                tls_key_file: "/k".into(),
                token_ttl_secs: 5,
                stream_creation_timeout_secs: 6,
                idle_timeout_secs: 7,
            }
        );
        parsed.validate().unwrap();
        let err = toml::from_str::<StreamingConfig>("idle_timeout = 5\n").unwrap_err();
        assert!(err.to_string().contains("idle_timeout"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let bad = |c: StreamingConfig| c.validate().unwrap_err();
        let e = bad(StreamingConfig {
            address: "localhost".into(),
            ..Default::default()
        });
        assert_eq!(e.key, "streaming.address");
        assert!(
            e.to_string().starts_with("config key `streaming.address`"),
            "{e}"
        );
        let e = bad(StreamingConfig {
            tls_cert_file: "/c".into(),
            ..Default::default()
        });
        assert_eq!(e.key, "streaming.tls_cert_file");
        for (key, c) in [
            (
                "streaming.token_ttl_secs",
                StreamingConfig {
                    token_ttl_secs: 0,
                    ..Default::default()
                },
            ),
            (
                "streaming.stream_creation_timeout_secs",
                StreamingConfig {
                    stream_creation_timeout_secs: 0,
                    ..Default::default()
                },
            ),
            (
                "streaming.idle_timeout_secs",
                StreamingConfig {
                    idle_timeout_secs: 0,
                    ..Default::default()
                },
            ),
        ] {
            assert_eq!(bad(c).key, key);
        }
    }
}
