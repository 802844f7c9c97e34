//! criusd configuration: one TOML file, every key optional.
//!
//! `Config::default()` and [`DEFAULT_CONFIG_TOML`] are the same configuration (a unit
//! test holds them together), so `criusd config default` never drifts from the code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crius_images::ImagesConfig;
use serde::{Deserialize, Serialize};

/// The complete default configuration, with comments; printed by `criusd config default`.
pub const DEFAULT_CONFIG_TOML: &str = r#"# crius configuration. Every key is optional; the values below are the built-in defaults.
# Unknown keys and bad values are errors that name the key.

# Persistent state: the metadata store (store.redb); later the content store and snapshots.
state_dir = "/var/lib/crius"

# Volatile state: pod directories, pinned namespaces, shim sockets. Usually a tmpfs.
run_dir = "/run/crius"

# The CRI gRPC socket the kubelet and crictl connect to. Created mode 0660; its
# directory is created mode 0711 when missing.
socket = "/run/crius/crius.sock"

# Log level (error, warn, info, debug, trace) or a tracing filter such as
# "info,crius=debug". RUST_LOG, when set, takes precedence.
log_level = "info"

# Cgroup driver reported to the kubelet by RuntimeConfig and used for container cgroups:
# "cgroupfs", "systemd", or "auto" (systemd when PID 1 is systemd, else cgroupfs).
cgroup_driver = "auto"

# The RuntimeClass handler used when a pod names none. Must be a key of [runtimes].
default_runtime = "runc"

# The helper that creates and pins a pod's namespaces. Empty: criusd itself
# (`criusd pinns ...`), which is what you want unless you are testing.
pinns_path = ""

# The per-container shim. Empty: crius-shim next to the criusd binary.
shim_path = ""

# Image pulls.
[images]
# Layers downloaded at once per pull.
max_concurrent_downloads = 3
# A registry that sends no data for this long fails the pull (after retries).
progress_timeout_secs = 60
# Attempts per blob or manifest on transient errors (connection reset, 5xx, stall),
# with exponential backoff from 500 ms.
pull_attempts = 3
# Registries reached over plain HTTP. Loopback registries (localhost, 127.0.0.0/8,
# [::1]) are plain HTTP without being listed, as in Docker and containerd.
insecure_registries = []
# Images never removed by RemoveImage or garbage collection (references, as pulled).
pinned_images = []
# Most bytes one layer may unpack to; a layer that unpacks to more fails the pull
# (a decompression bomb cannot fill the disk). 0: no limit.
max_layer_bytes = 0
# After a crash, the verified blobs of a pull cut short are kept this long, so that
# the kubelet's retry does not download them again. 0: collected at start-up.
interrupted_pull_expiry_secs = 3600
# containerd's registry host directories, read at every pull: <dir>/<registry
# host>/hosts.toml (or <dir>/_default/) with `server`, [host."<url>"] mirrors in
# order, `capabilities`, `ca`, `skip_verify`; a directory without hosts.toml gives
# CAs as *.crt files. ":" between several directories; "" for none.
config_path = "/etc/containerd/certs.d"
# Never contact an image's own registry, only its mirrors ([images.mirrors] and
# hosts.toml hosts): a pull that no mirror serves fails (air-gapped nodes).
mirror_only = false
# The same for these registries alone (hosts, as in image names: "docker.io").
mirror_only_registries = []

# Mirrors per upstream registry host, tried in order before the upstream:
# [images.mirrors]
# "docker.io" = ["mirror.example.com:5000"]
[images.mirrors]

# Credentials per registry host, used when the kubelet sends none:
# [images.credentials."registry.example.com"]
# username = "user"
# password = "secret"
[images.credentials]

# Pod networking.
[network]
# "auto": CNI plugins while cni_conf_dir holds a network config, the built-in bridge
# otherwise. "bridge": always the built-in bridge. "cni": only CNI plugins
# (NetworkReady is false until a config exists, as containerd and CRI-O do).
# "none": pods get loopback only (NetworkReady false).
backend = "auto"
# The built-in bridge: its name, IPv4 subnet, optional IPv6 subnet ("" for none), MTU.
bridge = "crius0"
subnet = "10.88.0.0/16"
subnet_v6 = ""
mtu = 1500
# Prefix of the iptables chains crius owns (NAT, hostPorts, forwarding).
chain_prefix = "CRIUS"
# Prefix of the host ends of pod veths.
veth_prefix = "vc"
# CNI: where network configs (.conflist, .conf) and plugin binaries are, where
# results are cached for DEL ("" means <state_dir>/cni), and the per-call timeout.
cni_conf_dir = "/etc/cni/net.d"
cni_bin_dirs = ["/opt/cni/bin", "/usr/lib/cni"]
cni_cache_dir = ""
cni_plugin_timeout_secs = 60

# The streaming server behind Exec, Attach and PortForward: the kubelet (or crictl)
# connects to the URL those calls return and speaks SPDY/3.1 or WebSocket.
[streaming]
# Listen address and port; port 0 picks a free port at start-up. Keep it on loopback
# unless TLS is configured: the kubelet proxies streams from its own server.
address = "127.0.0.1"
port = 0
# PEM certificate chain and private key; both empty means plain HTTP.
tls_cert_file = ""
tls_key_file = ""
# A URL is single-use and must be used within this many seconds.
token_ttl_secs = 60
# Seconds the client has to open the streams it asked for after connecting.
stream_creation_timeout_secs = 30
# A stream with no traffic in either direction for this long is closed.
idle_timeout_secs = 14400

# The Prometheus endpoint: criusd's own metrics (CRI calls, pods and containers by
# state, readiness) at http://<address>/metrics. "" is off; e.g. "127.0.0.1:1338".
[metrics]
address = ""

# OpenTelemetry tracing: a span per CRI call, with the slow steps as its children
# (image pulls and their layers, shim start and runtime calls, network setup and
# teardown), sent over OTLP/gRPC to endpoint. "" is off; e.g. "http://127.0.0.1:4317".
[tracing]
endpoint = ""
# How many calls in a million are traced (1000000: all).
sampling_rate_per_million = 1000000
# The service.name resource attribute of the spans.
service_name = "crius"

# CDI (Container Device Interface) devices, asked for by `cdi_devices` in a
# container's config or by `cdi.k8s.io/<key>` annotations (comma-separated fully
# qualified names, vendor.com/class=name), described by spec files (*.json, *.yaml)
# in spec_dirs. A later directory overrides an earlier one for the same device.
# Changed or new files are read at the next CreateContainer that asks for a device.
[cdi]
# Off: a container that asks for a CDI device is refused (FailedPrecondition).
enabled = true
spec_dirs = ["/etc/cdi", "/var/run/cdi"]

# NRI (Node Resource Interface): plugins that see pod and container lifecycle events
# and adjust containers as they are created. On by default; the socket exists only
# while enabled. Plugins in plugin_path named NN-name are started at daemon start.
[nri]
enabled = true
socket_path = "/var/run/nri/nri.sock"
plugin_path = "/opt/nri/plugins"
plugin_config_path = "/etc/nri/conf.d"
# How long a plugin has to register after connecting or being started.
plugin_registration_timeout_ms = 5000
# How long a plugin has to answer one request; one that does not is disconnected.
plugin_request_timeout_ms = 2000
# Refuse plugins connecting to the socket (pre-installed plugins still run).
disable_connections = false

# Rules the plugins' CreateContainer adjustments must keep, checked before they are
# merged; a creation that breaks one fails with FailedPrecondition naming the plugin.
# (Seccomp and namespace adjustments are never applied, so they need no rule.)
[nri.validator]
enabled = false
# Refuse adjustments that add OCI hooks, or device nodes.
reject_oci_hooks = false
reject_devices = false
# Host directories plugins' bind mounts may come from (empty: any).
allowed_mount_sources = []
# Plugins (name or NN-name) without which no container is created, unless its pod
# sets the annotation below to "true".
required_plugins = []
tolerate_missing_plugins_annotation = "validator.nri.io/tolerate-missing-plugins"

# RuntimeClass handlers: name -> OCI runtime binary (a bare name is looked up in PATH).
# Giving any [runtimes.X] table replaces this whole default set.
[runtimes.runc]
path = "runc"

[runtimes.crun]
path = "crun"
"#;

/// How the cgroup driver is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriverSetting {
    /// systemd when PID 1 is systemd, cgroupfs otherwise.
    Auto,
    /// Plain cgroupfs paths.
    Cgroupfs,
    /// systemd slices and scopes.
    Systemd,
}

/// The cgroup driver actually in use.
pub use crius_spec::CgroupDriver;

/// One RuntimeClass handler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeHandler {
    /// The OCI runtime binary: an absolute path, or a name looked up in PATH.
    pub path: PathBuf,
}

/// Which pod network backend criusd uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkBackendKind {
    Auto,
    Bridge,
    Cni,
    None,
}

/// Pod network settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    pub backend: NetworkBackendKind,
    pub bridge: String,
    pub subnet: String,
    pub subnet_v6: String,
    pub mtu: u32,
    pub chain_prefix: String,
    pub veth_prefix: String,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dirs: Vec<PathBuf>,
    pub cni_cache_dir: PathBuf,
    pub cni_plugin_timeout_secs: u64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            backend: NetworkBackendKind::Auto,
            bridge: "crius0".into(),
            subnet: "10.88.0.0/16".into(),
            subnet_v6: String::new(),
            mtu: 1500,
            chain_prefix: "CRIUS".into(),
            veth_prefix: "vc".into(),
            cni_conf_dir: PathBuf::from("/etc/cni/net.d"),
            cni_bin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
            cni_cache_dir: PathBuf::new(),
            cni_plugin_timeout_secs: 60,
        }
    }
}

impl NetworkConfig {
    /// The built-in bridge's settings, checked.
    pub fn bridge_config(&self) -> Result<crius_cni::BridgeConfig, ConfigError> {
        let subnet = self
            .subnet
            .parse()
            .map_err(|e| invalid("network.subnet", format!("{:?}: {e}", self.subnet)))?;
        let subnet_v6 =
            if self.subnet_v6.is_empty() {
                None
            } else {
                Some(self.subnet_v6.parse().map_err(|e| {
                    invalid("network.subnet_v6", format!("{:?}: {e}", self.subnet_v6))
                })?)
            };
        let cfg = crius_cni::BridgeConfig {
            bridge: self.bridge.clone(),
            subnet,
            subnet_v6,
            mtu: self.mtu,
            chain_prefix: self.chain_prefix.clone(),
            veth_prefix: self.veth_prefix.clone(),
            ..Default::default()
        };
        cfg.validate()
            .map_err(|e| invalid("network", e.to_string()))?;
        Ok(cfg)
    }

    /// The CNI executor's settings.
    pub fn cni_config(&self, state_dir: &Path) -> crius_cni::CniConfig {
        crius_cni::CniConfig {
            conf_dir: self.cni_conf_dir.clone(),
            bin_dirs: self.cni_bin_dirs.clone(),
            cache_dir: if self.cni_cache_dir.as_os_str().is_empty() {
                state_dir.join("cni")
            } else {
                self.cni_cache_dir.clone()
            },
            plugin_timeout_secs: self.cni_plugin_timeout_secs,
            ..Default::default()
        }
    }
}

/// criusd's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    pub socket: PathBuf,
    pub log_level: String,
    pub cgroup_driver: CgroupDriverSetting,
    pub default_runtime: String,
    pub pinns_path: PathBuf,
    pub shim_path: PathBuf,
    pub images: ImagesConfig,
    pub network: NetworkConfig,
    pub streaming: crius_streaming::StreamingConfig,
    pub metrics: MetricsConfig,
    pub tracing: TracingConfig,
    pub cdi: crate::cdi::CdiConfig,
    pub nri: crate::nri::NriConfig,
    pub runtimes: BTreeMap<String, RuntimeHandler>,
}

/// The `[metrics]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `host:port` of the Prometheus endpoint; empty: off.
    pub address: String,
}

/// The `[tracing]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// The OTLP/gRPC collector, `http://host:port` or `https://...`; empty: off.
    pub endpoint: String,
    /// Calls traced per million (the rest are not sampled).
    pub sampling_rate_per_million: u32,
    /// The spans' `service.name`.
    pub service_name: String,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            endpoint: String::new(),
            sampling_rate_per_million: 1_000_000,
            service_name: "crius".to_string(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let mut runtimes = BTreeMap::new();
        runtimes.insert(
            "runc".to_string(),
            RuntimeHandler {
                path: PathBuf::from("runc"),
            },
        );
        runtimes.insert(
            "crun".to_string(),
            RuntimeHandler {
                path: PathBuf::from("crun"),
            },
        );
        Config {
            state_dir: PathBuf::from("/var/lib/crius"),
            run_dir: PathBuf::from("/run/crius"),
            socket: PathBuf::from("/run/crius/crius.sock"),
            log_level: "info".to_string(),
            cgroup_driver: CgroupDriverSetting::Auto,
            default_runtime: "runc".to_string(),
            pinns_path: PathBuf::new(),
            shim_path: PathBuf::new(),
            images: ImagesConfig::default(),
            network: NetworkConfig::default(),
            streaming: crius_streaming::StreamingConfig::default(),
            metrics: MetricsConfig::default(),
            tracing: TracingConfig::default(),
            cdi: crate::cdi::CdiConfig::default(),
            nri: crate::nri::NriConfig::default(),
            runtimes,
        }
    }
}

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// The longest path a unix socket address can hold (sun_path less its NUL).
const MAX_SOCKET_PATH: usize = 107;

impl Config {
    /// Loads the file at `path`, or the defaults when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let config = match path {
            None => Config::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                Config::parse(&text).map_err(|message| ConfigError::Parse {
                    path: path.to_path_buf(),
                    message,
                })?
            }
        };
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text; the error message names the offending key.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let metrics = &self.metrics.address;
        if !metrics.is_empty() && metrics.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "metrics.address",
                format!("{metrics:?} must be an IP address and port, such as \"127.0.0.1:1338\""),
            ));
        }
        let t = &self.tracing;
        if !t.endpoint.is_empty() {
            let ok = (t.endpoint.starts_with("http://") || t.endpoint.starts_with("https://"))
                && t.endpoint
                    .parse::<hyper::Uri>()
                    .is_ok_and(|u| u.host().is_some_and(|h| !h.is_empty()));
            if !ok {
                return Err(invalid(
                    "tracing.endpoint",
                    format!(
                        "{:?} must be an http:// or https:// URL with a host, such as \"http://127.0.0.1:4317\"",
                        t.endpoint
                    ),
                ));
            }
        }
        if t.sampling_rate_per_million > 1_000_000 {
            return Err(invalid(
                "tracing.sampling_rate_per_million",
                format!("{} is more than 1000000", t.sampling_rate_per_million),
            ));
        }
        if t.service_name.trim().is_empty() {
            return Err(invalid("tracing.service_name", "must not be empty"));
        }
        for (key, path) in [
            ("state_dir", &self.state_dir),
            ("run_dir", &self.run_dir),
            ("socket", &self.socket),
        ] {
            if !path.is_absolute() {
                return Err(invalid(
                    key,
                    format!("must be an absolute path, got {:?}", path),
                ));
            }
        }
        if self.socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(invalid(
                "socket",
                format!(
                    "path is {} bytes; a unix socket path holds at most {MAX_SOCKET_PATH}",
                    self.socket.as_os_str().len()
                ),
            ));
        }
        if let Err((key, message)) = self.nri.check() {
            return Err(invalid(key, message));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return Err(invalid("log_level", e.to_string()));
        }
        if self.runtimes.is_empty() {
            return Err(invalid(
                "runtimes",
                "at least one runtime handler is needed",
            ));
        }
        for (name, handler) in &self.runtimes {
            if name.is_empty() {
                return Err(invalid("runtimes", "a handler name may not be empty"));
            }
            if handler.path.as_os_str().is_empty() {
                return Err(invalid(format!("runtimes.{name}.path"), "may not be empty"));
            }
        }
        if !self.runtimes.contains_key(&self.default_runtime) {
            return Err(invalid(
                "default_runtime",
                format!(
                    "{:?} is not a configured handler (configured: {})",
                    self.default_runtime,
                    self.runtimes.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        self.images
            .validate()
            .map_err(|e| invalid(e.key, e.message))?;
        self.network.bridge_config()?;
        self.streaming
            .validate()
            .map_err(|e| invalid(e.key, e.message))?;
        if self.network.cni_plugin_timeout_secs == 0 {
            return Err(invalid(
                "network.cni_plugin_timeout_secs",
                "must be at least 1",
            ));
        }
        self.cdi
            .validate()
            .map_err(|(key, message)| invalid(key, message))?;
        if !self.pinns_path.as_os_str().is_empty() && !self.pinns_path.is_absolute() {
            return Err(invalid("pinns_path", "must be empty or an absolute path"));
        }
        Ok(())
    }

    /// The cgroup driver in effect, resolving `auto`.
    pub fn cgroup_driver(&self) -> CgroupDriver {
        match self.cgroup_driver {
            CgroupDriverSetting::Cgroupfs => CgroupDriver::Cgroupfs,
            CgroupDriverSetting::Systemd => CgroupDriver::Systemd,
            CgroupDriverSetting::Auto => {
                if Path::new("/run/systemd/system").is_dir() {
                    CgroupDriver::Systemd
                } else {
                    CgroupDriver::Cgroupfs
                }
            }
        }
    }

    /// The metadata store's file.
    pub fn store_path(&self) -> std::path::PathBuf {
        self.state_dir.join("store.redb")
    }

    /// Prints the effective configuration as TOML.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_text_is_the_default_config() {
        let parsed = Config::parse(DEFAULT_CONFIG_TOML).unwrap();
        assert_eq!(parsed, Config::default());
        parsed.validate().unwrap();
    }

    #[test]
    fn deploy_config_is_the_default_text() {
        let shipped = include_str!("../../../deploy/config.toml");
        assert_eq!(
            shipped, DEFAULT_CONFIG_TOML,
            "regenerate deploy/config.toml with `criusd config default`"
        );
    }

    #[test]
    fn empty_file_is_the_default_config() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse("stat_dir = \"/x\"\n").unwrap_err();
        assert!(err.contains("stat_dir"), "{err}");
        let err = Config::parse("[runtimes.runc]\npath = \"runc\"\nroot = 1\n").unwrap_err();
        assert!(err.contains("root"), "{err}");
    }

    #[test]
    fn bad_value_is_named() {
        let err = Config::parse("cgroup_driver = \"cgroupv3\"\n").unwrap_err();
        assert!(err.contains("cgroup_driver"), "{err}");
        assert!(err.contains("cgroupv3"), "{err}");
        let err = Config::parse("state_dir = 5\n").unwrap_err();
        assert!(err.contains("state_dir"), "{err}");
    }

    #[test]
    fn validation_names_the_key() {
        let mut c = Config {
            run_dir: PathBuf::from("relative"),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("`run_dir`"));
        c = Config {
            default_runtime: "kata".into(),
            ..Config::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("`default_runtime`")
        );
        c = Config {
            log_level: "info,[".into(),
            ..Config::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("`log_level`")
        );
        c = Config {
            socket: PathBuf::from(format!("/{}", "s".repeat(200))),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("`socket`"));
    }

    #[test]
    fn network_values_are_checked() {
        let c = Config::parse("[network]\nsubnet = \"10.88.0.0/33\"\n").unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("network.subnet")
        );
        let c = Config::parse("[network]\nbridge = \"a-bridge-name-too-long\"\n").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("network"));
        let err = Config::parse("[network]\nbackend = \"flannel\"\n").unwrap_err();
        assert!(err.contains("backend"), "{err}");
    }

    #[test]
    fn streaming_values_are_checked() {
        let c = Config::parse("[streaming]\nidle_timeout_secs = 0\n").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("`streaming.idle_timeout_secs`"), "{err}");
        let err = Config::parse("[streaming]\nidle_timeout = 5\n").unwrap_err();
        assert!(err.contains("idle_timeout"), "{err}");
    }

    #[test]
    fn tracing_values_are_checked() {
        let c = Config::parse("[tracing]\nendpoint = \"http://127.0.0.1:4317\"\n").unwrap();
        c.validate().unwrap();
        assert_eq!(c.tracing.sampling_rate_per_million, 1_000_000);
        for (text, key) in [
            ("endpoint = \"127.0.0.1:4317\"", "tracing.endpoint"),
            ("endpoint = \"grpc://collector:4317\"", "tracing.endpoint"),
            ("endpoint = \"http://\"", "tracing.endpoint"),
            (
                "sampling_rate_per_million = 1000001",
                "tracing.sampling_rate_per_million",
            ),
            ("service_name = \" \"", "tracing.service_name"),
        ] {
            let c = Config::parse(&format!("[tracing]\n{text}\n")).unwrap();
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{text}: {err}");
        }
        let err = Config::parse("[tracing]\nsampling_ratio = 1.0\n").unwrap_err();
        assert!(err.contains("sampling_ratio"), "{err}");
    }

    #[test]
    fn cdi_values_are_checked() {
        let c = Config::parse("[cdi]\nenabled = false\nspec_dirs = [\"/x\"]\n").unwrap();
        assert!(!c.cdi.enabled);
        c.validate().unwrap();
        let c = Config::parse("[cdi]\nspec_dirs = [\"rel\"]\n").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("`cdi.spec_dirs`"), "{err}");
        let err = Config::parse("[cdi]\nspecdirs = []\n").unwrap_err();
        assert!(err.contains("specdirs"), "{err}");
    }

    #[test]
    fn runtimes_table_replaces_defaults() {
        let c = Config::parse(
            "default_runtime = \"kata\"\n[runtimes.kata]\npath = \"/usr/bin/kata-runtime\"\n",
        )
        .unwrap();
        assert_eq!(c.runtimes.len(), 1);
        c.validate().unwrap();
    }
}
