//! linux.devices and the device cgroup rules (linux.resources.devices): the request's
//! devices (a directory: every device under it), and for a privileged container every
//! device of the host's /dev but containerd's skip list, with the allow-all rule.

use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crius_cri_api::v1 as cri;
use oci_spec::runtime::{
    LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
};

use crate::error::{Result, SpecError, build, invalid, io};

/// Directories of /dev a privileged container does not get (containerd's list).
const HOST_DEV_SKIP: &[&str] = &["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];

/// A device of the spec and its cgroup rule.
type Found = (LinuxDevice, LinuxDeviceCgroup);

/// Why a device could not be added.
enum EntryError {
    Io(std::io::Error),
    Spec(SpecError),
}

impl From<std::io::Error> for EntryError {
    fn from(e: std::io::Error) -> Self {
        EntryError::Io(e)
    }
}

/// A device node: the spec entry and its cgroup rule, or `None` for other files.
fn device_entry(
    host: &Path,
    container: &str,
    access: &str,
) -> std::result::Result<Option<Found>, EntryError> {
    let meta = std::fs::metadata(host)?;
    let ft = meta.file_type();
    let typ = if ft.is_char_device() {
        LinuxDeviceType::C
    } else if ft.is_block_device() {
        LinuxDeviceType::B
    } else {
        return Ok(None);
    };
    let rdev = meta.rdev();
    let (major, minor) = (i64::from(libc::major(rdev)), i64::from(libc::minor(rdev)));
    let device = LinuxDeviceBuilder::default()
        .path(container)
        .typ(typ)
        .major(major)
        .minor(minor)
        .file_mode(meta.mode() & 0o7777)
        .uid(meta.uid())
        .gid(meta.gid())
        .build()
        .map_err(|e| EntryError::Spec(build("devices")(e)))?;
    let rule = LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .typ(typ)
        .major(major)
        .minor(minor)
        .access(access)
        .build()
        .map_err(|e| EntryError::Spec(build("device rules")(e)))?;
    Ok(Some((device, rule)))
}

fn walk_devices(
    host: &Path,
    container: &str,
    access: &str,
    top: bool,
    out: &mut Vec<Found>,
) -> std::result::Result<(), EntryError> {
    for entry in std::fs::read_dir(host)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        let ft = entry.file_type()?;
        let cpath = format!("{}/{name}", container.trim_end_matches('/'));
        if ft.is_dir() {
            if top && HOST_DEV_SKIP.contains(&name.as_str()) {
                continue;
            }
            walk_devices(&entry.path(), &cpath, access, false, out)?;
        } else if ft.is_char_device() || ft.is_block_device() {
            if top && name == "console" {
                continue;
            }
            if let Some(d) = device_entry(&entry.path(), &cpath, access)? {
                out.push(d);
            }
        }
    }
    Ok(())
}

/// The request's devices, after the host's for a privileged container.
fn requested(config: &cri::ContainerConfig, found: &mut Vec<Found>) -> Result<()> {
    for (i, d) in config.devices.iter().enumerate() {
        let field = |f: &str| format!("config.devices[{i}].{f}");
        let access = if d.permissions.is_empty() {
            "rwm"
        } else {
            d.permissions.as_str()
        };
        if !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
            return Err(invalid(
                field("permissions"),
                format!("{access:?}: only r, w and m are allowed"),
            ));
        }
        if !d.container_path.starts_with('/') {
            return Err(invalid(
                field("container_path"),
                format!("{:?} is not an absolute path", d.container_path),
            ));
        }
        let host = std::fs::canonicalize(&d.host_path)
            .map_err(|e| invalid(field("host_path"), format!("{:?}: {e}", d.host_path)))?;
        let refuse = |e: EntryError| match e {
            EntryError::Io(e) => invalid(field("host_path"), format!("{:?}: {e}", d.host_path)),
            EntryError::Spec(e) => e,
        };
        if host.is_dir() {
            walk_devices(&host, &d.container_path, access, false, found).map_err(refuse)?;
        } else {
            match device_entry(&host, &d.container_path, access).map_err(refuse)? {
                Some(dev) => found.push(dev),
                None => {
                    return Err(invalid(
                        field("host_path"),
                        format!("{:?} is not a device", d.host_path),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// linux.devices and linux.resources.devices; `host_dev` is the host's /dev.
pub(crate) fn devices(
    config: &cri::ContainerConfig,
    privileged: bool,
    host_dev: &Path,
) -> Result<(Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>)> {
    let mut found: Vec<Found> = Vec::new();
    if privileged {
        walk_devices(host_dev, "/dev", "rwm", true, &mut found).map_err(|e| match e {
            EntryError::Io(e) => io("listing the host's devices")(e),
            EntryError::Spec(e) => e,
        })?;
    }
    requested(config, &mut found)?;
    let mut seen = BTreeSet::new();
    let mut devs = Vec::new();
    // Privileged: every device is allowed; else none but those listed.
    let mut rules = vec![
        LinuxDeviceCgroupBuilder::default()
            .allow(privileged)
            .access("rwm")
            .build()
            .map_err(build("device rules"))?,
    ];
    for (dev, rule) in found {
        if seen.insert(dev.path().clone()) {
            devs.push(dev);
            if !privileged {
                rules.push(rule);
            }
        }
    }
    Ok((devs, rules))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn device(container: &str, host: &str, perms: &str) -> cri::Device {
        cri::Device {
            container_path: container.into(),
            host_path: host.into(),
            permissions: perms.into(),
        }
    }

    fn config(devices: Vec<cri::Device>) -> cri::ContainerConfig {
        cri::ContainerConfig {
            devices,
            ..Default::default()
        }
    }

    #[test]
    fn devices_from_host_paths() {
        let c = config(vec![
            device("/dev/mynull", "/dev/null", "rw"),
            device("/dev/mynull", "/dev/zero", ""),
        ]);
        let (devs, rules) = devices(&c, false, Path::new("/dev")).unwrap();
        assert_eq!(devs.len(), 1, "one device per container path");
        let d = serde_json::to_value(&devs[0]).unwrap();
        assert_eq!(d["path"], "/dev/mynull");
        assert_eq!(d["type"], "c");
        assert_eq!(
            (d["major"].as_i64(), d["minor"].as_i64()),
            (Some(1), Some(3))
        );
        let rules = serde_json::to_value(&rules).unwrap();
        assert_eq!(rules[0], json!({"allow": false, "access": "rwm"}));
        assert_eq!(
            rules[1],
            json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw"})
        );
        assert_eq!(rules.as_array().unwrap().len(), 2);

        let file = std::env::current_exe().unwrap().display().to_string();
        for (d, field, text) in [
            (
                device("/dev/n", "/dev/null", "rwx"),
                "config.devices[0].permissions",
                "only r, w and m",
            ),
            (
                device("n", "/dev/null", ""),
                "config.devices[0].container_path",
                "not an absolute path",
            ),
            (
                device("/dev/n", "/dev/does-not-exist", ""),
                "config.devices[0].host_path",
                "No such file",
            ),
            (
                device("/dev/n", &file, ""),
                "config.devices[0].host_path",
                "is not a device",
            ),
        ] {
            let e = devices(&config(vec![d]), false, Path::new("/dev")).unwrap_err();
            assert_eq!(e.field(), Some(field), "{e}");
            assert!(e.to_string().contains(text), "{e}");
        }
    }

    #[test]
    fn a_directory_brings_every_device_under_it() {
        let c = config(vec![device("/dev/mine", "/dev", "r")]);
        let (devs, rules) = devices(&c, false, Path::new("/dev")).unwrap();
        let paths: Vec<String> = devs
            .iter()
            .map(|d| d.path().display().to_string())
            .collect();
        assert!(paths.contains(&"/dev/mine/null".to_string()), "{paths:?}");
        assert_eq!(rules.len(), devs.len() + 1);
    }

    #[test]
    fn privileged_gets_the_hosts_dev_and_allow_all() {
        let (devs, rules) = devices(&config(vec![]), true, Path::new("/dev")).unwrap();
        let paths: Vec<String> = devs
            .iter()
            .map(|d| d.path().display().to_string())
            .collect();
        assert!(paths.contains(&"/dev/null".to_string()), "{paths:?}");
        assert!(!paths.iter().any(|p| p.starts_with("/dev/pts/")));
        assert!(!paths.contains(&"/dev/console".to_string()));
        let rules = serde_json::to_value(&rules).unwrap();
        assert_eq!(rules, json!([{"allow": true, "access": "rwm"}]));
        let e = devices(&config(vec![]), true, Path::new("/nonexistent-dev")).unwrap_err();
        assert!(matches!(e, SpecError::Io { .. }), "{e}");
    }
}
