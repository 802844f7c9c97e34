//! The `[images]` table of criusd's configuration. Every key is optional; the
//! defaults are those documented in criusd's `config default` output (which
//! cri-server keeps identical to `ImagesConfig::default()` by a test).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Credentials for one registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// The user name sent with basic auth.
    pub username: String,
    /// Its password.
    pub password: String,
}

/// Image pull settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImagesConfig {
    /// Layers downloaded at once per pull (at least 1).
    pub max_concurrent_downloads: usize,
    /// A registry that sends no data for this long fails the attempt (at least 1).
    pub progress_timeout_secs: u64,
    /// Attempts per blob or manifest on transient errors (at least 1).
    pub pull_attempts: u32,
    /// Registries reached over plain HTTP (loopback ones always are).
    pub insecure_registries: Vec<String>,
    /// Images reported as pinned.
    pub pinned_images: Vec<String>,
    /// Most bytes one layer may unpack to (0: no limit).
    pub max_layer_bytes: u64,
    /// How long the verified blobs of a pull that a crash cut short are kept for
    /// its retry (0: collected at start-up).
    pub interrupted_pull_expiry_secs: u64,
    /// Mirrors per upstream registry host, tried in order before it.
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// Credentials per registry host, used when the kubelet sends none.
    pub credentials: BTreeMap<String, Credential>,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig {
            max_concurrent_downloads: 3,
            progress_timeout_secs: 60,
            pull_attempts: 3,
            insecure_registries: Vec::new(),
            pinned_images: Vec::new(),
            max_layer_bytes: 0,
            interrupted_pull_expiry_secs: 3600,
            mirrors: BTreeMap::new(),
            credentials: BTreeMap::new(),
        }
    }
}

/// A value of `[images]` that parses but cannot work; `key` is its full name
/// (`images.pull_attempts`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config key `{key}`: {message}")]
pub struct InvalidConfig {
    /// The key, with its table (`images.pull_attempts`).
    pub key: String,
    /// What is wrong with its value.
    pub message: String,
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> InvalidConfig {
    InvalidConfig {
        key: key.into(),
        message: message.into(),
    }
}

impl ImagesConfig {
    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if self.max_concurrent_downloads == 0 {
            return Err(invalid(
                "images.max_concurrent_downloads",
                "must be at least 1",
            ));
        }
        if self.progress_timeout_secs == 0 {
            return Err(invalid(
                "images.progress_timeout_secs",
                "must be at least 1",
            ));
        }
        if self.pull_attempts == 0 {
            return Err(invalid("images.pull_attempts", "must be at least 1"));
        }
        for (host, mirrors) in &self.mirrors {
            for (i, m) in mirrors.iter().enumerate() {
                if m.is_empty() || m.contains(['/', ' ']) {
                    return Err(invalid(
                        format!("images.mirrors.{host:?}[{i}]"),
                        format!("{m:?} must be a registry host[:port]"),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_the_key() {
        ImagesConfig::default().validate().unwrap();
        let cases = [
            (
                ImagesConfig {
                    max_concurrent_downloads: 0,
                    ..Default::default()
                },
                "images.max_concurrent_downloads",
            ),
            (
                ImagesConfig {
                    progress_timeout_secs: 0,
                    ..Default::default()
                },
                "images.progress_timeout_secs",
            ),
            (
                ImagesConfig {
                    pull_attempts: 0,
                    ..Default::default()
                },
                "images.pull_attempts",
            ),
            (
                ImagesConfig {
                    mirrors: BTreeMap::from([(
                        "docker.io".to_string(),
                        vec!["ok:5000".to_string(), "http://bad".to_string()],
                    )]),
                    ..Default::default()
                },
                "images.mirrors.\"docker.io\"[1]",
            ),
        ];
        for (cfg, key) in cases {
            let e = cfg.validate().unwrap_err();
            assert_eq!(e.key, key, "{e}");
            assert!(e.to_string().contains(key), "{e}");
        }
    }

    #[test]
    fn unknown_keys_are_refused_and_missing_ones_default() {
        let c: ImagesConfig = toml::from_str("pull_attempts = 5\n").unwrap();
        assert_eq!(c.pull_attempts, 5);
        assert_eq!(c.max_concurrent_downloads, 3);
        let e = toml::from_str::<ImagesConfig>("pul_attempts = 5\n").unwrap_err();
        assert!(e.to_string().contains("pul_attempts"), "{e}");
    }
}
