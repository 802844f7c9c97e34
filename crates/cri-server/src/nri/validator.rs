//! The built-in validator (`[nri.validator]`): what plugins' CreateContainer
//! adjustments may do on this node, checked before they are merged, and which
//! plugins must have taken part. Off by default; each rule is its own switch.
//!
//! Seccomp policies and namespace changes are never applied by crius (the merge
//! refuses them as unsupported), so they need no rule here.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::api;

/// The `[nri.validator]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidatorConfig {
    /// The rules below apply.
    pub enabled: bool,
    /// Refuse adjustments that add OCI hooks (they run as root on the host).
    pub reject_oci_hooks: bool,
    /// Refuse adjustments that add device nodes.
    pub reject_devices: bool,
    /// Host directories a plugin's bind mount may come from (the source must be one
    /// of them or under one); empty: any.
    pub allowed_mount_sources: Vec<PathBuf>,
    /// Plugins (`name` or `NN-name`) that must be connected and subscribed to
    /// CreateContainer for a container to be created.
    pub required_plugins: Vec<String>,
    /// A pod annotation that, set to `true`, lets its containers be created while a
    /// required plugin is missing.
    pub tolerate_missing_plugins_annotation: String,
}

impl Default for ValidatorConfig {
    fn default() -> Self {
        ValidatorConfig {
            enabled: false,
            reject_oci_hooks: false,
            reject_devices: false,
            allowed_mount_sources: Vec::new(),
            required_plugins: Vec::new(),
            tolerate_missing_plugins_annotation: "validator.nri.io/tolerate-missing-plugins".into(),
        }
    }
}

/// Why the validator refused a creation: the plugin whose adjustment broke a rule
/// (none for a missing required plugin), and the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub plugin: Option<String>,
    pub message: String,
}

impl ValidatorConfig {
    /// The key and problem of a value that cannot be used.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        for p in &self.allowed_mount_sources {
            if !p.is_absolute() || p.components().any(|c| c == Component::ParentDir) {
                return Err((
                    "nri.validator.allowed_mount_sources",
                    format!("{p:?} must be an absolute path without `..`"),
                ));
            }
        }
        if self.required_plugins.iter().any(|p| p.trim().is_empty()) {
            return Err((
                "nri.validator.required_plugins",
                "a plugin name is empty".into(),
            ));
        }
        Ok(())
    }

    /// Checks one creation: `consulted` are the full names (`NN-name`) of the
    /// plugins asked, `replies` their adjustments.
    pub fn validate(
        &self,
        pod_annotations: &HashMap<String, String>,
        consulted: &[String],
        replies: &[(String, api::ContainerAdjustment)],
    ) -> Result<(), Refusal> {
        if !self.enabled {
            return Ok(());
        }
        let tolerated = pod_annotations
            .get(&self.tolerate_missing_plugins_annotation)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        if !tolerated {
            for required in &self.required_plugins {
                let present = consulted.iter().any(|full| {
                    full == required || full.split_once('-').is_some_and(|(_, n)| n == required)
                });
                if !present {
                    return Err(Refusal {
                        plugin: None,
                        message: format!(
                            "required plugin {required:?} is not connected (the pod may set {:?}: \"true\" to go without it)",
                            self.tolerate_missing_plugins_annotation
                        ),
                    });
                }
            }
        }
        for (plugin, a) in replies {
            let refuse = |message: String| Refusal {
                plugin: Some(plugin.clone()),
                message,
            };
            if self.reject_oci_hooks && a.hooks.as_ref().is_some_and(has_hooks) {
                return Err(refuse("it adds OCI hooks, which this node refuses".into()));
            }
            if self.reject_devices {
                if let Some(d) = a
                    .linux
                    .as_ref()
                    .and_then(|l| l.devices.iter().find(|d| !d.path.starts_with('-')))
                {
                    return Err(refuse(format!(
                        "it adds the device {:?}; this node refuses devices from plugins",
                        d.path
                    )));
                }
            }
            if !self.allowed_mount_sources.is_empty() {
                for m in &a.mounts {
                    if m.destination.starts_with('-') || !is_bind(m) {
                        continue;
                    }
                    if !self.mount_source_allowed(Path::new(&m.source)) {
                        return Err(refuse(format!(
                            "its bind mount of {:?} at {:?} is outside the allowed sources {:?}",
                            m.source, m.destination, self.allowed_mount_sources
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    fn mount_source_allowed(&self, source: &Path) -> bool {
        source.is_absolute()
            && !source.components().any(|c| c == Component::ParentDir)
            && self
                .allowed_mount_sources
                .iter()
                .any(|allowed| source.starts_with(allowed))
    }
}

fn has_hooks(h: &api::Hooks) -> bool {
    !(h.prestart.is_empty()
        && h.create_runtime.is_empty()
        && h.create_container.is_empty()
        && h.start_container.is_empty()
        && h.poststart.is_empty()
        && h.poststop.is_empty())
}

/// A bind mount: its type, or an option, says so.
fn is_bind(m: &api::Mount) -> bool {
    m.r#type == "bind" || m.options.iter().any(|o| o == "bind" || o == "rbind")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on() -> ValidatorConfig {
        ValidatorConfig {
            enabled: true,
            ..ValidatorConfig::default()
        }
    }

    fn bind(source: &str, destination: &str) -> api::Mount {
        api::Mount {
            destination: destination.into(),
            r#type: "bind".into(),
            source: source.into(),
            options: vec!["rbind".into(), "ro".into()],
        }
    }

    fn hooks() -> api::ContainerAdjustment {
        api::ContainerAdjustment {
            hooks: Some(api::Hooks {
                poststart: vec![api::Hook {
                    path: "/bin/true".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn none() -> HashMap<String, String> {
        HashMap::new()
    }

    #[test]
    fn off_lets_everything_through() {
        let v = ValidatorConfig {
            reject_oci_hooks: true,
            required_plugins: vec!["policy".into()],
            ..ValidatorConfig::default()
        };
        assert_eq!(
            v.validate(&none(), &[], &[("10-a".into(), hooks())]),
            Ok(())
        );
    }

    #[test]
    fn hooks_and_devices_are_refused_naming_the_plugin() {
        let v = ValidatorConfig {
            reject_oci_hooks: true,
            reject_devices: true,
            ..on()
        };
        let err = v
            .validate(&none(), &["10-a".into()], &[("10-a".into(), hooks())])
            .unwrap_err();
        assert_eq!(err.plugin.as_deref(), Some("10-a"));
        assert!(err.message.contains("OCI hooks"), "{err:?}");
        let device = api::ContainerAdjustment {
            linux: Some(api::LinuxContainerAdjustment {
                devices: vec![api::LinuxDevice {
                    path: "/dev/fuse".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = v
            .validate(&none(), &[], &[("20-b".into(), device)])
            .unwrap_err();
        assert!(err.message.contains("\"/dev/fuse\""), "{err:?}");
        // Removing a device (`-path`) is not adding one.
        let removal = api::ContainerAdjustment {
            linux: Some(api::LinuxContainerAdjustment {
                devices: vec![api::LinuxDevice {
                    path: "-/dev/fuse".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            v.validate(&none(), &[], &[("20-b".into(), removal)]),
            Ok(())
        );
    }

    #[test]
    fn bind_mounts_come_only_from_the_allowed_sources() {
        let v = ValidatorConfig {
            allowed_mount_sources: vec!["/var/lib/plugin-data".into()],
            ..on()
        };
        let with = |m: api::Mount| api::ContainerAdjustment {
            mounts: vec![m],
            ..Default::default()
        };
        let check = |m| v.validate(&none(), &[], &[("10-a".into(), with(m))]);
        assert_eq!(check(bind("/var/lib/plugin-data", "/data")), Ok(()));
        assert_eq!(check(bind("/var/lib/plugin-data/x", "/data")), Ok(()));
        for bad in [
            "/",
            "/etc",
            "/var/lib/plugin-data-other",
            "/var/lib/plugin-data/../../../etc",
            "relative",
        ] {
            let err = check(bind(bad, "/data")).unwrap_err();
            assert!(
                err.message.contains("outside the allowed sources"),
                "{bad}: {err:?}"
            );
        }
        // A tmpfs is no bind of a host path; a removal mounts nothing.
        let tmpfs = api::Mount {
            destination: "/scratch".into(),
            r#type: "tmpfs".into(),
            source: "tmpfs".into(),
            options: vec![],
        };
        assert_eq!(check(tmpfs), Ok(()));
        assert_eq!(check(bind("", "-/data")), Ok(()));
    }

    #[test]
    fn a_missing_required_plugin_refuses_unless_the_pod_tolerates_it() {
        let v = ValidatorConfig {
            required_plugins: vec!["policy".into(), "05-devices".into()],
            ..on()
        };
        let both = ["05-devices".to_string(), "10-policy".to_string()];
        assert_eq!(v.validate(&none(), &both, &[]), Ok(()));
        let err = v.validate(&none(), &["10-policy".into()], &[]).unwrap_err();
        assert_eq!(err.plugin, None);
        assert!(err.message.contains("\"05-devices\""), "{err:?}");
        let tolerant: HashMap<String, String> = [(
            "validator.nri.io/tolerate-missing-plugins".to_string(),
            "true".to_string(),
        )]
        .into();
        assert_eq!(v.validate(&tolerant, &[], &[]), Ok(()));
    }

    #[test]
    fn bad_settings_are_named() {
        let v = ValidatorConfig {
            allowed_mount_sources: vec!["data".into()],
            ..on()
        };
        assert_eq!(
            v.check().unwrap_err().0,
            "nri.validator.allowed_mount_sources"
        );
        let v = ValidatorConfig {
            required_plugins: vec![" ".into()],
            ..on()
        };
        assert_eq!(v.check().unwrap_err().0, "nri.validator.required_plugins");
    }
}
