//! CDI devices for containers: the `[cdi]` configuration, the devices a
//! CreateContainer asks for (`config.cdi_devices` and `cdi.k8s.io/*` annotations), and
//! the daemon's view of the spec directories (`crius_spec::cdi` reads and applies the
//! files).
//!
//! When the directories are read: at every CreateContainer that asks for a CDI
//! device and at every verbose Status, criusd lists the spec directories and stats
//! each spec file (path, inode, size, modification time in nanoseconds); only when
//! that differs from the last listing, or the last listing had a file modified in
//! its last two seconds (file times are as coarse as a clock tick, so a same-size
//! rewrite within one would keep its time), are the files read again. That is a readdir
//! and a stat per file for the calls that need it, and nothing for the others. It
//! sees a directory created after start-up, a file replaced by rename (new inode)
//! and one rewritten in place, and needs no watcher thread or inotify descriptor
//! (inotify would also have to watch for the directories themselves appearing).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crius_cri_api::v1 as cri;
use crius_spec::cdi::{
    ANNOTATION_PREFIX, CdiEdits, CdiError, DEFAULT_SPEC_DIRS, QualifiedName, Registry, Request,
    Stamp,
};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::error::{CriError, CriResult};

/// The `[cdi]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CdiConfig {
    /// Off: a container that asks for a CDI device is refused.
    pub enabled: bool,
    /// Spec directories, lowest priority first.
    pub spec_dirs: Vec<PathBuf>,
}

impl Default for CdiConfig {
    fn default() -> Self {
        CdiConfig {
            enabled: true,
            spec_dirs: DEFAULT_SPEC_DIRS.iter().map(PathBuf::from).collect(),
        }
    }
}

impl CdiConfig {
    /// The key at fault and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if let Some(d) = self.spec_dirs.iter().find(|d| !d.is_absolute()) {
            return Err((
                "cdi.spec_dirs".into(),
                format!("{:?} must be an absolute path", d),
            ));
        }
        Ok(())
    }
}

/// The CDI devices `config` asks for, in order (`cdi_devices`, then the annotations
/// by key), each with the request field that names it. Names are checked here:
/// a malformed one is InvalidArgument naming its field.
pub fn requests(config: &cri::ContainerConfig) -> CriResult<Vec<Request>> {
    let mut out = Vec::new();
    for (i, d) in config.cdi_devices.iter().enumerate() {
        out.push(Request {
            name: d.name.clone(),
            field: format!("config.cdi_devices[{i}].name"),
        });
    }
    let mut keys: Vec<&String> = config
        .annotations
        .keys()
        .filter(|k| k.starts_with(ANNOTATION_PREFIX))
        .collect();
    keys.sort();
    for key in keys {
        let value = &config.annotations[key];
        for name in value.split(',') {
            out.push(Request {
                name: name.trim().to_string(),
                field: format!("config.annotations[{key:?}]"),
            });
        }
    }
    for r in &out {
        if let Err(reason) = r.name.parse::<QualifiedName>() {
            return Err(CriError::from(CdiError::InvalidName {
                field: r.field.clone(),
                name: r.name.clone(),
                reason,
            }));
        }
    }
    Ok(out)
}

/// A refused request is InvalidArgument naming the field that asked for the device;
/// a device that needs what crius does not do is FailedPrecondition.
impl From<CdiError> for CriError {
    fn from(e: CdiError) -> Self {
        match e {
            CdiError::Unsupported { .. } => CriError::FailedPrecondition(e.to_string()),
            e => CriError::invalid(e.field(), e.message()),
        }
    }
}

/// The spec directories as last read.
struct Cache {
    stamp: Option<Stamp>,
    registry: Arc<Registry>,
}

/// The daemon's CDI devices.
pub struct Cdi {
    config: CdiConfig,
    cache: Mutex<Cache>,
}

impl Cdi {
    pub fn new(config: CdiConfig) -> Cdi {
        Cdi {
            config,
            cache: Mutex::new(Cache {
                stamp: None,
                registry: Arc::new(Registry::default()),
            }),
        }
    }

    /// The registry, read again when the directories changed (blocking).
    fn registry(&self) -> Arc<Registry> {
        let dirs = &self.config.spec_dirs;
        let stamp = Stamp::of(dirs);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.stamp.as_ref() != Some(&stamp) {
            let registry = Registry::scan(dirs);
            for b in registry.broken() {
                warn!(spec_file = %b.path.display(), error = %b.error, "CDI spec file not loaded; its devices are unavailable");
            }
            for (name, paths) in registry.ambiguous() {
                warn!(device = %name, files = ?paths, "CDI device defined twice at the same priority; it is unavailable");
            }
            info!(
                devices = registry.devices().len(),
                "CDI spec directories read"
            );
            cache.registry = Arc::new(registry);
            // A file changed in the last seconds may change again unseen by its stamp.
            cache.stamp = stamp.settled().then_some(stamp);
        }
        cache.registry.clone()
    }

    /// The edits of the CDI devices `config` asks for (none: empty). Blocking: reads
    /// the spec directories when they changed and stats host device nodes.
    pub fn resolve(&self, config: &cri::ContainerConfig) -> CriResult<CdiEdits> {
        let requests = requests(config)?;
        let Some(first) = requests.first() else {
            return Ok(CdiEdits::default());
        };
        if !self.config.enabled {
            return Err(CriError::FailedPrecondition(format!(
                "{}: CDI device {:?} requested but CDI is disabled on this node ([cdi] enabled = false)",
                first.field, first.name
            )));
        }
        Ok(self.registry().resolve(&requests)?)
    }

    /// What `crictl info` shows: the configuration, the devices known, those defined
    /// twice, and the spec files that failed to load with their errors (blocking).
    pub fn info(&self) -> serde_json::Value {
        if !self.config.enabled {
            return serde_json::json!({"enabled": false, "specDirs": self.config.spec_dirs});
        }
        let reg = self.registry();
        let broken: Vec<serde_json::Value> = reg
            .broken()
            .iter()
            .map(|b| serde_json::json!({"specFile": b.path, "error": b.error}))
            .collect();
        let ambiguous: Vec<serde_json::Value> = reg
            .ambiguous()
            .iter()
            .map(|(name, files)| serde_json::json!({"name": name, "specFiles": files}))
            .collect();
        serde_json::json!({
            "enabled": true,
            "specDirs": self.config.spec_dirs,
            "devices": reg.devices(),
            "ambiguousDevices": ambiguous,
            "specFileErrors": broken,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(devices: &[&str], annotations: &[(&str, &str)]) -> cri::ContainerConfig {
        cri::ContainerConfig {
            cdi_devices: devices
                .iter()
                .map(|n| cri::CdiDevice {
                    name: n.to_string(),
                })
                .collect(),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn field_of(r: CriResult<Vec<Request>>) -> String {
        match r {
            Err(CriError::InvalidArgument { field, message }) => {
                assert!(message.contains("fully qualified"), "{message}");
                field
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn requests_come_from_the_field_and_the_annotations() {
        let c = config(
            &["v.com/d=a"],
            &[
                ("cdi.k8s.io/z", "v.com/d=c"),
                ("cdi.k8s.io/b", "v.com/d=b, v.com/d=a"),
                ("other", "v.com/d=x"),
            ],
        );
        let r = requests(&c).unwrap();
        let names: Vec<&str> = r.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["v.com/d=a", "v.com/d=b", "v.com/d=a", "v.com/d=c"]);
        assert_eq!(r[0].field, "config.cdi_devices[0].name");
        assert_eq!(r[1].field, "config.annotations[\"cdi.k8s.io/b\"]");
        assert!(requests(&config(&[], &[])).unwrap().is_empty());
        assert_eq!(
            field_of(requests(&config(&["v.com/d=a", "nope"], &[]))),
            "config.cdi_devices[1].name"
        );
        assert_eq!(
            field_of(requests(&config(&[], &[("cdi.k8s.io/x", "v.com/d=a,")]))),
            "config.annotations[\"cdi.k8s.io/x\"]"
        );
    }

    #[test]
    fn errors_map_to_codes_and_a_new_file_is_seen() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cdi");
        let cdi = Cdi::new(CdiConfig {
            enabled: true,
            spec_dirs: vec![dir.clone()],
        });
        let want = config(&["v.com/d=a"], &[]);
        let e = cdi.resolve(&want).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        assert!(
            e.to_string().contains("\"v.com/d=a\" is not defined"),
            "{e}"
        );
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("v.json"),
            r#"{"cdiVersion":"0.6.0","kind":"v.com/d","devices":[{"name":"a","containerEdits":{"env":["A=1"]}}]}"#,
        )
        .unwrap();
        let edits = cdi.resolve(&want).unwrap();
        assert_eq!(edits.devices, vec!["v.com/d=a"]);
        assert_eq!(edits.edits[0].env, ["A=1"]);
        // Rewritten in place at once with the same size: still seen.
        std::fs::write(
            dir.join("v.json"),
            r#"{"cdiVersion":"0.6.0","kind":"v.com/d","devices":[{"name":"a","containerEdits":{"env":["A=2"]}}]}"#,
        )
        .unwrap();
        assert_eq!(cdi.resolve(&want).unwrap().edits[0].env, ["A=2"]);
        let info = cdi.info();
        assert_eq!(info["devices"][0]["name"], "v.com/d=a");
        assert!(cdi.resolve(&config(&[], &[])).unwrap().is_empty());
        std::fs::write(dir.join("bad.yaml"), "kind: [").unwrap();
        let info = cdi.info();
        assert!(
            info["specFileErrors"][0]["specFile"]
                .as_str()
                .unwrap()
                .ends_with("bad.yaml"),
            "{info}"
        );
        // Still served: the broken file is not the one needed.
        cdi.resolve(&want).unwrap();

        let off = Cdi::new(CdiConfig {
            enabled: false,
            spec_dirs: vec![dir],
        });
        let e = off.resolve(&want).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
        assert!(off.resolve(&config(&[], &[])).is_ok());
    }

    #[test]
    fn spec_dirs_must_be_absolute() {
        let c = CdiConfig {
            enabled: true,
            spec_dirs: vec!["etc/cdi".into()],
        };
        assert_eq!(c.validate().unwrap_err().0, "cdi.spec_dirs");
        CdiConfig::default().validate().unwrap();
    }
}
