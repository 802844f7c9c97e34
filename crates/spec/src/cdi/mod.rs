//! CDI, the Container Device Interface: vendor spec files (JSON or YAML) in spec
//! directories describe devices by fully qualified name (`vendor.com/class=name`)
//! and the edits a container that asks for one gets (device nodes, mounts,
//! environment, hooks, additional groups, Intel RDT). This module reads the files
//! ([`registry`]), resolves the devices a container asks for and applies their edits
//! to the container's OCI spec ([`apply`]).
//!
//! Why a module of crius's own rather than the `container-device-interface` crate
//! (1.1.1, Apache-2.0): that crate is a port of the Go library that brings a CLI's
//! dependencies into the library (clap, jsonschema with its own dependency tree,
//! lazy_static and once_cell together, the deprecated serde_yaml), reports errors as
//! `anyhow` and `Box<dyn Error>` (not typed, so the daemon cannot tell a missing
//! device from a broken file to choose a gRPC code), hands out its cache as an
//! `Arc<Mutex<_>>` it locks with `lock().unwrap()`, and its auto-refresh option has
//! no watcher behind it (its watch module is not part of the library), so the caller
//! must decide when to re-read anyway. What crius needs is small: parse, validate,
//! resolve with the priority rules, apply to an oci-spec `Spec` it already builds.
//! Written from the published spec (SPEC.md, spec 1.1.0) and the documented priority
//! rule.
//!
//! Rules (what the spec and its reference library document):
//! - A spec file is `*.json` or `*.yaml` directly in a spec directory. Unknown fields
//!   are refused; `cdiVersion` must be a released version (0.1.0 to 1.1.0, an
//!   optional leading `v`) at least as new as the fields the file uses need.
//! - Directories are in priority order: a device in a later directory overrides one
//!   in an earlier directory. The same device twice at the highest priority that
//!   defines it (two files of one directory) is ambiguous: neither is used.
//! - A file that does not parse or validate defines nothing; the other files still
//!   count. The error is kept so that a request for a device of its kind names it.
//! - The spec-level `containerEdits` of a file are applied once, before the edits
//!   of the first device requested from that file.
//!
//! Left out: `netDevices` (runc 1.1 and crun 1.8 ignore `linux.netDevices`, so the
//! container would silently lack them): a device that needs them is refused. Intel
//! RDT is copied into `linux.intelRdt` as given; whether it works is the runtime's
//! and the node's (resctrl) business. Mounts into a user namespace (id-mapped) are
//! not needed: crius does not run containers in user namespaces.

mod apply;
mod registry;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

pub use apply::CdiEdits;
pub use registry::{BrokenFile, KnownDevice, Registry, Request, Stamp};

/// Container annotations whose key starts with this ask for CDI devices: the value is
/// a comma-separated list of fully qualified names.
pub const ANNOTATION_PREFIX: &str = "cdi.k8s.io/";

/// The spec directories when none are configured: static files, then generated ones
/// (which win).
pub const DEFAULT_SPEC_DIRS: [&str; 2] = ["/etc/cdi", "/var/run/cdi"];

/// Why a CDI request cannot be met. Each names the device and the request field that
/// asked for it (`config.cdi_devices[0].name`, `config.annotations["cdi.k8s.io/x"]`).
#[derive(Debug, thiserror::Error)]
pub enum CdiError {
    #[error(
        "{field}: {name:?} is not a fully qualified CDI device name (vendor.com/class=name): {reason}"
    )]
    InvalidName {
        field: String,
        name: String,
        reason: String,
    },
    #[error(
        "{field}: CDI device {name:?} is not defined in any spec file (spec dirs: {dirs}){broken}"
    )]
    Unknown {
        field: String,
        name: String,
        dirs: String,
        /// "; spec files that failed to load: …", or "".
        broken: String,
    },
    #[error("{field}: CDI device {name:?}: the spec file {} of kind {kind:?} failed to load: {error}", path.display())]
    BrokenFile {
        field: String,
        name: String,
        kind: String,
        path: PathBuf,
        error: String,
    },
    #[error(
        "{field}: CDI device {name:?} is ambiguous: defined at the same priority in {}",
        join_paths(paths)
    )]
    Ambiguous {
        field: String,
        name: String,
        paths: Vec<PathBuf>,
    },
    #[error("{field}: CDI device {name:?} ({}): {message}", path.display())]
    HostDevice {
        field: String,
        name: String,
        path: PathBuf,
        message: String,
    },
    /// The device needs something crius does not do.
    #[error("{field}: CDI device {name:?} ({}): {message}", path.display())]
    Unsupported {
        field: String,
        name: String,
        path: PathBuf,
        message: String,
    },
}

impl CdiError {
    /// The request field that asked for the device.
    pub fn field(&self) -> &str {
        match self {
            CdiError::InvalidName { field, .. }
            | CdiError::Unknown { field, .. }
            | CdiError::BrokenFile { field, .. }
            | CdiError::Ambiguous { field, .. }
            | CdiError::HostDevice { field, .. }
            | CdiError::Unsupported { field, .. } => field,
        }
    }

    /// The message without the field (for a status that adds the field itself).
    pub fn message(&self) -> String {
        let text = self.to_string();
        let prefix = format!("{}: ", self.field());
        text.strip_prefix(&prefix).unwrap_or(&text).to_string()
    }
}

fn join_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A fully qualified device name: `vendor/class=name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QualifiedName {
    pub vendor: String,
    pub class: String,
    pub name: String,
}

impl QualifiedName {
    /// `vendor/class`, the kind of the spec files that define the device.
    pub fn kind(&self) -> String {
        format!("{}/{}", self.vendor, self.class)
    }
}

impl fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}={}", self.vendor, self.class, self.name)
    }
}

impl std::str::FromStr for QualifiedName {
    type Err = String;

    /// Parses and checks `vendor/class=name`: vendor and class start with a letter,
    /// end with a letter or digit and hold letters, digits, `-`, `_` and `.`; the
    /// name starts and ends with a letter or digit and may also hold `:`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, name) = s
            .split_once('=')
            .ok_or_else(|| "missing '=' before the device name".to_string())?;
        let (vendor, class) = parse_kind(kind)?;
        check_segment(name, "device name", false, true)?;
        Ok(QualifiedName {
            vendor,
            class,
            name: name.to_string(),
        })
    }
}

/// Splits and checks a spec file's `kind` (`vendor/class`).
pub fn parse_kind(kind: &str) -> Result<(String, String), String> {
    let (vendor, class) = kind
        .split_once('/')
        .ok_or_else(|| format!("kind {kind:?} has no '/' between vendor and class"))?;
    check_segment(vendor, "vendor", true, false)?;
    check_segment(class, "class", true, false)?;
    Ok((vendor.to_string(), class.to_string()))
}

/// One part of a qualified name: non-empty ASCII, first a letter (or, unless
/// `letter_first`, a digit), last a letter or digit, between them letters, digits,
/// `-`, `_`, `.` and (with `colon`) `:`.
fn check_segment(s: &str, what: &str, letter_first: bool, colon: bool) -> Result<(), String> {
    let bytes = s.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return Err(format!("empty {what}"));
    };
    let first_ok = if letter_first {
        first.is_ascii_alphabetic()
    } else {
        first.is_ascii_alphanumeric()
    };
    if !first_ok {
        let must = if letter_first {
            "a letter"
        } else {
            "a letter or digit"
        };
        return Err(format!("{what} {s:?} must start with {must}"));
    }
    if !last.is_ascii_alphanumeric() {
        return Err(format!("{what} {s:?} must end with a letter or digit"));
    }
    if let Some(bad) = s.chars().find(|&c| {
        !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') || (colon && c == ':'))
    }) {
        return Err(format!("{what} {s:?} holds {bad:?}"));
    }
    Ok(())
}

/// A spec file as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SpecFile {
    pub cdi_version: String,
    pub kind: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub devices: Vec<DeviceDef>,
    #[serde(default)]
    pub container_edits: ContainerEdits,
}

/// One device of a spec file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeviceDef {
    pub name: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub container_edits: ContainerEdits,
}

/// Edits to a container's OCI spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerEdits {
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub device_nodes: Vec<DeviceNode>,
    #[serde(default)]
    pub net_devices: Vec<NetDevice>,
    #[serde(default)]
    pub hooks: Vec<Hook>,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    #[serde(default)]
    pub intel_rdt: Option<IntelRdt>,
    #[serde(default, rename = "additionalGids")]
    pub additional_gids: Vec<u32>,
}

impl ContainerEdits {
    fn is_empty(&self) -> bool {
        self == &ContainerEdits::default()
    }
}

/// A device node for the container (`linux.devices` and its cgroup rule).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeviceNode {
    /// In the container.
    pub path: String,
    /// On the host; empty: `path`.
    #[serde(default)]
    pub host_path: String,
    /// `b`, `c`, `u` or `p`; empty: the host node's.
    #[serde(default, rename = "type")]
    pub typ: String,
    #[serde(default)]
    pub major: i64,
    #[serde(default)]
    pub minor: i64,
    #[serde(default)]
    pub file_mode: Option<u32>,
    /// Cgroup access (`rwm` letters); empty: `rwm`; `none`: no access.
    #[serde(default)]
    pub permissions: String,
    #[serde(default)]
    pub uid: Option<u32>,
    #[serde(default)]
    pub gid: Option<u32>,
}

/// A mount for the container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Mount {
    pub host_path: String,
    pub container_path: String,
    #[serde(default)]
    pub options: Vec<String>,
    #[serde(default, rename = "type")]
    pub typ: String,
}

/// An OCI hook.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Hook {
    pub hook_name: String,
    pub path: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub timeout: Option<i64>,
}

/// `linux.intelRdt`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IntelRdt {
    #[serde(default, rename = "closID")]
    pub clos_id: String,
    #[serde(default)]
    pub l3_cache_schema: String,
    #[serde(default)]
    pub mem_bw_schema: String,
    #[serde(default)]
    pub schemata: Option<Vec<String>>,
    #[serde(default)]
    pub enable_monitoring: bool,
}

/// A host network interface to move into the container (not supported).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetDevice {
    pub host_interface_name: String,
    pub name: String,
}

/// The released spec versions, oldest first.
const VERSIONS: [&str; 10] = [
    "0.1.0", "0.2.0", "0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0", "1.1.0",
];

fn version_index(v: &str) -> Option<usize> {
    VERSIONS.iter().position(|k| *k == v)
}

/// The oldest version that has every field `spec` uses.
fn required_version(spec: &SpecFile) -> &'static str {
    let all_edits = || {
        std::iter::once(&spec.container_edits)
            .chain(spec.devices.iter().map(|d| &d.container_edits))
    };
    let any = |f: &dyn Fn(&ContainerEdits) -> bool| all_edits().any(f);
    if any(&|e| {
        !e.net_devices.is_empty()
            || e.intel_rdt
                .as_ref()
                .is_some_and(|r| r.schemata.is_some() || r.enable_monitoring)
    }) {
        return "1.1.0";
    }
    if any(&|e| e.intel_rdt.is_some() || !e.additional_gids.is_empty()) {
        return "0.7.0";
    }
    let class_has_dot = spec
        .kind
        .split_once('/')
        .is_some_and(|(_, c)| c.contains('.'));
    if !spec.annotations.is_empty()
        || spec.devices.iter().any(|d| !d.annotations.is_empty())
        || class_has_dot
    {
        return "0.6.0";
    }
    if spec
        .devices
        .iter()
        .any(|d| d.name.starts_with(|c: char| c.is_ascii_digit()))
        || any(&|e| e.device_nodes.iter().any(|n| !n.host_path.is_empty()))
    {
        return "0.5.0";
    }
    if any(&|e| e.mounts.iter().any(|m| !m.typ.is_empty())) {
        return "0.4.0";
    }
    "0.3.0"
}

const HOOK_NAMES: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

fn check_env(env: &[String], what: &str) -> Result<(), String> {
    match env.iter().find(|v| v.find('=').is_none_or(|i| i == 0)) {
        Some(v) => Err(format!("{what}: {v:?} is not NAME=value")),
        None => Ok(()),
    }
}

fn check_edits(e: &ContainerEdits, at: &str) -> Result<(), String> {
    check_env(&e.env, &format!("{at}env"))?;
    for (i, d) in e.device_nodes.iter().enumerate() {
        let at = format!("{at}deviceNodes[{i}]");
        if !d.path.starts_with('/') {
            return Err(format!("{at}.path: {:?} is not an absolute path", d.path));
        }
        if !matches!(d.typ.as_str(), "" | "b" | "c" | "u" | "p") {
            return Err(format!("{at}.type: {:?} is not b, c, u or p", d.typ));
        }
        let p = d.permissions.as_str();
        if p != "none" && !p.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
            return Err(format!(
                "{at}.permissions: {p:?} is not made of r, w and m (or \"none\")"
            ));
        }
    }
    for (i, m) in e.mounts.iter().enumerate() {
        let at = format!("{at}mounts[{i}]");
        if m.host_path.is_empty() {
            return Err(format!("{at}.hostPath is empty"));
        }
        if !m.container_path.starts_with('/') {
            return Err(format!(
                "{at}.containerPath: {:?} is not an absolute path",
                m.container_path
            ));
        }
    }
    for (i, h) in e.hooks.iter().enumerate() {
        let at = format!("{at}hooks[{i}]");
        if !HOOK_NAMES.contains(&h.hook_name.as_str()) {
            return Err(format!(
                "{at}.hookName: {:?} is not one of {}",
                h.hook_name,
                HOOK_NAMES.join(", ")
            ));
        }
        if !h.path.starts_with('/') {
            return Err(format!("{at}.path: {:?} is not an absolute path", h.path));
        }
        check_env(&h.env, &format!("{at}.env"))?;
        if h.timeout.is_some_and(|t| t <= 0) {
            return Err(format!("{at}.timeout must be greater than zero"));
        }
    }
    for (i, n) in e.net_devices.iter().enumerate() {
        if n.host_interface_name.is_empty() || n.name.is_empty() {
            return Err(format!(
                "{at}netDevices[{i}]: hostInterfaceName and name are required"
            ));
        }
    }
    Ok(())
}

/// A checked spec file, with the vendor and class of its kind.
#[derive(Debug, Clone)]
pub struct ValidSpec {
    pub file: SpecFile,
    pub vendor: String,
    pub class: String,
}

/// Parses spec file text (`yaml`: YAML, else JSON) and checks it.
pub fn parse_spec(text: &str, yaml: bool) -> Result<ValidSpec, String> {
    let file: SpecFile = if yaml {
        // Legacy octal (`fileMode: 0644`), as the YAML 1.1 reader of the reference
        // library reads it.
        let mut options = serde_saphyr::Options::default();
        options.legacy_octal_numbers = true;
        serde_saphyr::from_str_with_options(text, options).map_err(|e| e.to_string())?
    } else {
        serde_json::from_str(text).map_err(|e| e.to_string())?
    };
    validate(file)
}

/// The checks of a parsed spec file.
pub fn validate(file: SpecFile) -> Result<ValidSpec, String> {
    let version = file.cdi_version.trim_start_matches('v');
    let Some(have) = version_index(version) else {
        return Err(format!(
            "cdiVersion {:?} is not a released CDI version ({} to {})",
            file.cdi_version,
            VERSIONS[0],
            VERSIONS[VERSIONS.len() - 1]
        ));
    };
    let need = required_version(&file);
    if version_index(need).is_some_and(|n| n > have) {
        return Err(format!(
            "cdiVersion {:?} is too old for the fields the file uses: they need {need}",
            file.cdi_version
        ));
    }
    let (vendor, class) = parse_kind(&file.kind).map_err(|e| format!("kind: {e}"))?;
    check_edits(&file.container_edits, "containerEdits.")?;
    if file.devices.is_empty() {
        return Err("devices: a spec file must define at least one device".into());
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, d) in file.devices.iter().enumerate() {
        check_segment(&d.name, "device name", false, true)
            .map_err(|e| format!("devices[{i}].name: {e}"))?;
        if !seen.insert(d.name.as_str()) {
            return Err(format!(
                "devices[{i}]: device {:?} is defined twice",
                d.name
            ));
        }
        if d.container_edits.is_empty() {
            return Err(format!(
                "devices[{i}] ({}): a device needs container edits",
                d.name
            ));
        }
        check_edits(&d.container_edits, &format!("devices[{i}].containerEdits."))?;
    }
    Ok(ValidSpec {
        file,
        vendor,
        class,
    })
}

#[cfg(test)]
mod tests;
