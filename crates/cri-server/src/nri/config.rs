//! The `[nri]` table of the configuration.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The longest unix socket path (`sun_path` holds 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The `[nri]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NriConfig {
    /// NRI on: the socket listens and pre-installed plugins start.
    pub enabled: bool,
    /// The socket plugins connect to.
    pub socket_path: PathBuf,
    /// Pre-installed plugins: executables named `NN-name`, started at daemon start.
    pub plugin_path: PathBuf,
    /// Their configuration: `NN-name.conf` or `name.conf`.
    pub plugin_config_path: PathBuf,
    /// How long a plugin has to register.
    pub plugin_registration_timeout_ms: u64,
    /// How long a plugin has to answer one request.
    pub plugin_request_timeout_ms: u64,
    /// No socket for external plugins (pre-installed ones still run).
    pub disable_connections: bool,
    /// The rules plugins' adjustments must keep (`[nri.validator]`).
    pub validator: super::validator::ValidatorConfig,
}

impl Default for NriConfig {
    fn default() -> Self {
        NriConfig {
            enabled: true,
            socket_path: PathBuf::from("/var/run/nri/nri.sock"),
            plugin_path: PathBuf::from("/opt/nri/plugins"),
            plugin_config_path: PathBuf::from("/etc/nri/conf.d"),
            plugin_registration_timeout_ms: 5000,
            plugin_request_timeout_ms: 2000,
            disable_connections: false,
            validator: super::validator::ValidatorConfig::default(),
        }
    }
}

impl NriConfig {
    pub fn registration_timeout(&self) -> Duration {
        Duration::from_millis(self.plugin_registration_timeout_ms)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.plugin_request_timeout_ms)
    }

    /// The key and the problem of a value that cannot be used.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        for (key, path) in [
            ("nri.socket_path", &self.socket_path),
            ("nri.plugin_path", &self.plugin_path),
            ("nri.plugin_config_path", &self.plugin_config_path),
        ] {
            if !path.is_absolute() {
                return Err((key, format!("must be an absolute path, got {path:?}")));
            }
        }
        if self.socket_path.as_os_str().len() > MAX_SOCKET_PATH {
            return Err((
                "nri.socket_path",
                format!(
                    "path is {} bytes; a unix socket path holds at most {MAX_SOCKET_PATH}",
                    self.socket_path.as_os_str().len()
                ),
            ));
        }
        for (key, ms) in [
            (
                "nri.plugin_registration_timeout_ms",
                self.plugin_registration_timeout_ms,
            ),
            (
                "nri.plugin_request_timeout_ms",
                self.plugin_request_timeout_ms,
            ),
        ] {
            if ms == 0 {
                return Err((key, "must be more than 0".to_string()));
            }
        }
        self.validator.check()
    }
}
