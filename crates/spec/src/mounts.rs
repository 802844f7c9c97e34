//! The spec's mounts: containerd's defaults (/proc, /dev, /dev/pts, /dev/shm,
//! /dev/mqueue, /sys, /sys/fs/cgroup), the pod's hostname/hosts/resolv.conf and /dev/shm,
//! and the request's bind mounts, with the rootfs propagation they need.
//!
//! A request mount replaces a default or pod mount at the same destination (a /dev
//! mount replaces every default under /dev too); bind mounts follow the defaults,
//! shallow destinations before deep ones.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crius_cri_api::v1 as cri;
use oci_spec::runtime::{Mount, MountBuilder};

use crate::SpecInput;
use crate::error::{Result, SpecError, build, invalid, unsupported};

/// Size of a private /dev/shm (and of /dev), containerd's 64 MiB.
const TMPFS_SIZE: &str = "size=65536k";

/// `path` made lexically clean ("/a/./b/" → "/a/b").
pub(crate) fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

fn depth(path: &str) -> usize {
    path.split('/').filter(|s| !s.is_empty()).count()
}

/// A default mount: destination, type, source, options.
type DefaultMount = (&'static str, &'static str, &'static str, Vec<&'static str>);

fn default_mounts(privileged: bool) -> Vec<DefaultMount> {
    let sys_ro: &[&str] = if privileged { &[] } else { &["ro"] };
    let mut sys = vec!["nosuid", "noexec", "nodev"];
    sys.extend_from_slice(sys_ro);
    let mut cgroup = vec!["nosuid", "noexec", "nodev", "relatime"];
    cgroup.extend_from_slice(sys_ro);
    vec![
        ("/proc", "proc", "proc", vec!["nosuid", "noexec", "nodev"]),
        (
            "/dev",
            "tmpfs",
            "tmpfs",
            vec!["nosuid", "strictatime", "mode=755", TMPFS_SIZE],
        ),
        (
            "/dev/pts",
            "devpts",
            "devpts",
            vec![
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        (
            "/dev/shm",
            "tmpfs",
            "shm",
            vec!["nosuid", "noexec", "nodev", "mode=1777", TMPFS_SIZE],
        ),
        (
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            vec!["nosuid", "noexec", "nodev"],
        ),
        ("/sys", "sysfs", "sysfs", sys),
        ("/sys/fs/cgroup", "cgroup", "cgroup", cgroup),
    ]
}

fn mount(dest: &str, typ: &str, source: impl Into<PathBuf>, options: Vec<String>) -> Result<Mount> {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options)
        .build()
        .map_err(build("mounts"))
}

/// A bind mount to add: destination (clean), source, options.
#[derive(Debug)]
struct Bind {
    dest: String,
    source: PathBuf,
    options: Vec<String>,
}

fn ro_rw(ro: bool) -> String {
    if ro { "ro" } else { "rw" }.to_string()
}

/// The pod's files and /dev/shm, unless the request mounts something there.
fn pod_binds(
    input: &SpecInput,
    sc: &cri::LinuxContainerSecurityContext,
    cri_dests: &BTreeSet<String>,
) -> Vec<Bind> {
    let mut binds = Vec::new();
    // The pod's files (containerd mounts them read-only with a read-only rootfs).
    for (dest, file) in [
        ("/etc/hostname", "hostname"),
        ("/etc/hosts", "hosts"),
        ("/etc/resolv.conf", "resolv.conf"),
    ] {
        let source = input.pod_dir.join(file);
        if !cri_dests.contains(dest) && source.exists() {
            binds.push(Bind {
                dest: dest.to_string(),
                source,
                options: vec![
                    "rbind".to_string(),
                    "rprivate".to_string(),
                    ro_rw(sc.readonly_rootfs),
                ],
            });
        }
    }
    if let Some(shm) = input.shm {
        if !cri_dests.contains("/dev/shm") {
            binds.push(Bind {
                dest: "/dev/shm".to_string(),
                source: shm.to_path_buf(),
                options: vec!["rbind".into(), "rprivate".into(), "rw".into()],
            });
        }
    }
    binds
}

/// One request mount as a bind; `propagation` becomes the rootfs propagation it needs.
fn cri_bind(
    i: usize,
    m: &cri::Mount,
    prepared: Option<&PathBuf>,
    propagation: &mut Option<String>,
) -> Result<Bind> {
    let field = |f: &str| format!("config.mounts[{i}].{f}");
    if (!m.uid_mappings.is_empty() || !m.gid_mappings.is_empty()) && prepared.is_none() {
        // The container manager makes each idmapped mount (the OCI runtimes here
        // cannot) and hands over its directory.
        return Err(unsupported(
            field("uid_mappings"),
            "an idmapped mount needs the pod's own user namespace, with the same maps",
        ));
    }
    if !m.container_path.starts_with('/') {
        return Err(invalid(
            field("container_path"),
            format!("{:?} is not an absolute path", m.container_path),
        ));
    }
    if m.image.as_ref().is_some_and(|s| !s.image.is_empty()) {
        // An image volume: the image the container manager mounted read-only.
        if !m.readonly {
            return Err(invalid(
                field("readonly"),
                "an image volume is always read-only: readonly must be true",
            ));
        }
        let Some(source) = prepared else {
            return Err(unsupported(
                field("image"),
                "the image volume was not prepared by the container manager",
            ));
        };
        return Ok(Bind {
            dest: clean(&m.container_path),
            source: source.clone(),
            options: vec!["rbind".into(), "rprivate".into(), "ro".into()],
        });
    }
    if m.host_path.is_empty() {
        return Err(invalid(field("host_path"), "must not be empty"));
    }
    let mode = cri::MountPropagation::try_from(m.propagation).map_err(|_| {
        invalid(
            field("propagation"),
            format!("unknown propagation {}", m.propagation),
        )
    })?;
    if m.recursive_read_only {
        if !m.readonly {
            return Err(invalid(
                field("readonly"),
                "a recursive read-only mount must be readonly",
            ));
        }
        if mode != cri::MountPropagation::PropagationPrivate {
            return Err(invalid(
                field("propagation"),
                "a recursive read-only mount needs private propagation",
            ));
        }
    }
    let source = match prepared {
        Some(p) => p.clone(),
        None => std::fs::canonicalize(&m.host_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                invalid(
                    field("host_path"),
                    format!("{:?} does not exist", m.host_path),
                )
            } else {
                invalid(field("host_path"), format!("{:?}: {e}", m.host_path))
            }
        })?,
    };
    let mut options = vec!["rbind".to_string()];
    match mode {
        cri::MountPropagation::PropagationPrivate => options.push("rprivate".into()),
        cri::MountPropagation::PropagationHostToContainer => {
            options.push("rslave".into());
            if propagation.as_deref() != Some("rshared") {
                *propagation = Some("rslave".into());
            }
        }
        cri::MountPropagation::PropagationBidirectional => {
            options.push("rshared".into());
            *propagation = Some("rshared".into());
        }
    }
    if m.recursive_read_only && prepared.is_none() {
        // The runtime makes it recursive (runc and crun know `rro`).
        options.push("rro".into());
    } else {
        // A prepared recursive read-only source is read-only all the way down already;
        // the bind of it keeps each submount's flags.
        options.push(ro_rw(m.readonly || m.recursive_read_only));
    }
    Ok(Bind {
        dest: clean(&m.container_path),
        source,
        options,
    })
}

/// The spec's mounts and the rootfs propagation they need.
pub(crate) fn mounts(
    input: &SpecInput,
    sc: &cri::LinuxContainerSecurityContext,
) -> std::result::Result<(Vec<Mount>, Option<String>), SpecError> {
    let config = input.config;
    let cri_dests: BTreeSet<String> = config
        .mounts
        .iter()
        .map(|m| clean(&m.container_path))
        .collect();
    let mut binds = pod_binds(input, sc, &cri_dests);
    let mut propagation: Option<String> = None;
    for (i, m) in config.mounts.iter().enumerate() {
        let prepared = input.prepared_mounts.get(&i);
        binds.push(cri_bind(i, m, prepared, &mut propagation)?);
    }
    let supplied: BTreeSet<&str> = binds.iter().map(|b| b.dest.as_str()).collect();
    let mut out = Vec::new();
    for (dest, typ, source, options) in default_mounts(sc.privileged) {
        let under_dev = supplied.contains("/dev") && dest.starts_with("/dev/");
        if !supplied.contains(dest) && !under_dev {
            let options = options.into_iter().map(str::to_string).collect();
            out.push(mount(dest, typ, source, options)?);
        }
    }
    binds.sort_by_key(|b| depth(&b.dest));
    for b in binds {
        out.push(mount(&b.dest, "bind", b.source, b.options)?);
    }
    Ok((out, propagation))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned_lexically() {
        assert_eq!(clean("/a/./b/"), "/a/b");
        assert_eq!(clean("/x/./y/../z"), "/x/z");
        assert_eq!(clean("/../.."), "/");
        assert_eq!(clean("rel/p"), "/rel/p");
        assert_eq!(depth("/a/b/c"), 3);
        assert_eq!(depth("/"), 0);
    }

    #[test]
    fn default_mounts_are_read_only_unless_privileged() {
        let m = default_mounts(false);
        assert_eq!(m.len(), 7);
        let sys = m.iter().find(|m| m.0 == "/sys").unwrap();
        assert!(sys.3.contains(&"ro"));
        let m = default_mounts(true);
        let cg = m.iter().find(|m| m.0 == "/sys/fs/cgroup").unwrap();
        assert!(!cg.3.contains(&"ro"));
    }

    fn bind(m: cri::Mount) -> Result<(Bind, Option<String>)> {
        let mut p = None;
        cri_bind(0, &m, None, &mut p).map(|b| (b, p))
    }

    #[test]
    fn request_mounts_name_the_field_and_set_propagation() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().to_str().unwrap().to_string();
        let (b, p) = bind(cri::Mount {
            container_path: "/data/".into(),
            host_path: host.clone(),
            readonly: true,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(b.dest, "/data");
        assert_eq!(b.options, vec!["rbind", "rprivate", "ro"]);
        assert_eq!(p, None);
        let mut p = Some("rshared".to_string());
        let m = cri::Mount {
            container_path: "/d".into(),
            host_path: host.clone(),
            propagation: cri::MountPropagation::PropagationHostToContainer as i32,
            ..Default::default()
        };
        let b = cri_bind(0, &m, None, &mut p).unwrap();
        assert_eq!(b.options, vec!["rbind", "rslave", "rw"]);
        assert_eq!(p.as_deref(), Some("rshared"), "rshared wins over rslave");
        let e = bind(cri::Mount {
            container_path: "/d".into(),
            host_path: format!("{host}/missing"),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.field(), Some("config.mounts[0].host_path"));
        // An image volume is bound from the directory the manager prepared, read-only.
        let image = cri::Mount {
            container_path: "/v".into(),
            image: Some(cri::ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            readonly: true,
            ..Default::default()
        };
        let e = bind(image.clone()).unwrap_err();
        assert!(matches!(e, SpecError::Unsupported { .. }), "{e}");
        let prepared = PathBuf::from("/run/crius/containers/c/volumes/0");
        let b = cri_bind(0, &image, Some(&prepared), &mut None).unwrap();
        assert_eq!((b.dest.as_str(), &b.source), ("/v", &prepared));
        assert_eq!(b.options, vec!["rbind", "rprivate", "ro"]);
        let writable = cri::Mount {
            readonly: false,
            ..image
        };
        let e = cri_bind(0, &writable, Some(&prepared), &mut None).unwrap_err();
        assert_eq!(e.field(), Some("config.mounts[0].readonly"));
        // Recursive read-only: `rro` for the runtime, or the prepared clone bound `ro`.
        let rro = cri::Mount {
            container_path: "/r".into(),
            host_path: host.clone(),
            readonly: true,
            recursive_read_only: true,
            ..Default::default()
        };
        let (b, _) = bind(rro.clone()).unwrap();
        assert_eq!(b.options, vec!["rbind", "rprivate", "rro"]);
        let clone = PathBuf::from("/run/crius/containers/c/rro/0");
        let b = cri_bind(0, &rro, Some(&clone), &mut None).unwrap();
        assert_eq!(
            (&b.source, b.options),
            (&clone, vec!["rbind".into(), "rprivate".into(), "ro".into()])
        );
        for (m, f) in [
            (
                cri::Mount {
                    readonly: false,
                    ..rro.clone()
                },
                "config.mounts[0].readonly",
            ),
            (
                cri::Mount {
                    propagation: cri::MountPropagation::PropagationHostToContainer as i32,
                    ..rro.clone()
                },
                "config.mounts[0].propagation",
            ),
            (
                cri::Mount {
                    propagation: cri::MountPropagation::PropagationBidirectional as i32,
                    ..rro.clone()
                },
                "config.mounts[0].propagation",
            ),
        ] {
            assert_eq!(bind(m).unwrap_err().field(), Some(f));
        }
        let e = bind(cri::Mount {
            container_path: "/v".into(),
            host_path: host,
            uid_mappings: vec![cri::IdMapping::default()],
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(e, SpecError::Unsupported { .. }), "{e}");
        assert_eq!(e.field(), Some("config.mounts[0].uid_mappings"));
    }
}
