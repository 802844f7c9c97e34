//! Workload features of recent Kubernetes releases, on real runc and crun: image
//! volumes (an image mounted read-only into a container, whole or a subdirectory),
//! recursive read-only mounts (every submount read-only too), and the
//! SupplementalGroupsPolicy (Merge and Strict), and pods with their own user
//! namespace (the rootfs and volumes idmapped by crius).
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use crius_e2e::images::{Comp, Entry, ImageBuilder, tar_of};
use crius_e2e::v1 as cri;
use crius_e2e::*;
use tonic::Code;

/// A daemon for `runtime` with the busybox image and a pod.
async fn busybox_pod(tag: &str, runtime: Runtime) -> (Fixture, String, String) {
    Fixture::with_busybox_pod(tag, Options::default().with_runtime(runtime)).await
}

async fn runtime_status(f: &mut Fixture) -> cri::StatusResponse {
    f.d.rt
        .status(cri::StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner()
}

/// An exec's exit code, stdout and stderr.
async fn sh(f: &mut Fixture, id: &str, script: &str) -> (i32, String, String) {
    let r = f.exec(id, script).await;
    (
        r.exit_code,
        String::from_utf8_lossy(&r.stdout).into_owned(),
        String::from_utf8_lossy(&r.stderr).into_owned(),
    )
}

fn image_volume(image: &str, at: &str, sub: &str) -> cri::Mount {
    cri::Mount {
        container_path: at.into(),
        readonly: true,
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        image_sub_path: sub.into(),
        ..Default::default()
    }
}

/// The `info` of a verbose ContainerStatus (the OCI spec, the pid, ...).
async fn verbose_info(f: &mut Fixture, id: &str) -> serde_json::Value {
    let verbose =
        f.d.rt
            .container_status(cri::ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: true,
            })
            .await
            .unwrap()
            .into_inner();
    serde_json::from_str(&verbose.info["info"]).unwrap()
}

/// The files under `dir` (relative), for "nothing is left" checks.
fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn image_volumes(runtime: Runtime) {
    let (mut f, image, pod) = busybox_pod("wl-imgvol", runtime).await;
    // A two-layer data image: the second layer adds a file and a symlink that tries to
    // lead out of the image.
    let data = ImageBuilder::new("test/data")
        .layer(
            tar_of(&[
                Entry::Dir("data", 0o755),
                Entry::File("data/hello.txt".into(), b"hello".to_vec(), 0o644),
                Entry::Dir("data/sub", 0o755),
                Entry::File("data/sub/deep".into(), b"deep".to_vec(), 0o644),
                Entry::File(
                    "data/sub/run.sh".into(),
                    b"#!/bin/sh\necho ran\n".to_vec(),
                    0o755,
                ),
            ]),
            Comp::Gzip,
        )
        .layer(
            tar_of(&[
                Entry::Dir("data", 0o755),
                Entry::File("data/two.txt".into(), b"two".to_vec(), 0o644),
                Entry::Symlink("up".into(), "../../../../../..".into()),
            ]),
            Comp::Zstd,
        );
    let data = f.push(data).await.reference();
    let data_id = f.pull(&data).await;

    let c = ContainerBuilder::new("reader", &image)
        .command(["/bin/sleep", "100000"])
        .mount(image_volume(&data_id, "/vol", ""))
        .mount(image_volume(&data, "/sub", "data/sub"))
        .mount(image_volume(&data, "/up", "up/data"));
    let id = f.run(&pod, c).await;
    let (code, out, err) = sh(
        &mut f,
        &id,
        "cat /vol/data/hello.txt /vol/data/two.txt /sub/deep",
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "hellotwodeep"), "{err}");
    // A subdirectory is mounted, not the image root; a symlink resolves inside the
    // image, never on the host.
    let (code, out, _) = sh(&mut f, &id, "ls /sub; ls /up").await;
    assert_eq!(
        (code, out.as_str()),
        (0, "deep\nrun.sh\nhello.txt\nsub\ntwo.txt\n")
    );
    // Read-only, and executable.
    for path in ["/vol/new", "/vol/data/hello.txt", "/sub/new"] {
        let (code, _, err) = sh(&mut f, &id, &format!("echo x > {path}")).await;
        assert_ne!(code, 0, "writing {path} must fail");
        assert!(err.contains("Read-only file system"), "{path}: {err}");
    }
    let (code, out, err) = sh(&mut f, &id, "/sub/run.sh").await;
    assert_eq!((code, out.as_str()), (0, "ran\n"), "{err}");

    // ContainerStatus names the image and its id for each volume.
    let st = f.status(&id).await;
    for at in ["/vol", "/sub"] {
        let m = st.mounts.iter().find(|m| m.container_path == at).unwrap();
        let spec = m.image.as_ref().unwrap();
        assert_eq!(spec.image_ref, data_id, "{at}: {m:?}");
    }
    // The volume is a mount of the snapshotter's layers (no copy): an overlay on the
    // host in the bundle, and a view in the snapshotter.
    let bundle = f.d.run_dir().join("containers").join(&id);
    let on_host = mounts_under(&bundle);
    assert!(
        on_host.iter().any(|m| m.ends_with("/volumes/0")),
        "{on_host:?}"
    );
    let snapshots = f.d.state_dir().join("snapshots/snapshots");
    let views = entries(&snapshots);
    assert!(views.contains(&format!("{id}-v0")), "{views:?}");

    // RemoveImage of an image in use as a volume removes its references (as
    // containerd does); its layers stay for the volume, which keeps working.
    remove_image_by_id(&mut f.d.img, &data_id).await;
    assert!(image_status(&mut f.d.img, &data_id).await.is_none());
    let (code, out, _) = sh(&mut f, &id, "cat /vol/data/two.txt").await;
    assert_eq!((code, out.as_str()), (0, "two"));

    // A restart keeps the container, its volumes and their accounting.
    f.d.crash_and_restart().await;
    let (code, out, _) = sh(&mut f, &id, "cat /sub/deep").await;
    assert_eq!((code, out.as_str()), (0, "deep"));
    let st = f.status(&id).await;
    let m = st
        .mounts
        .iter()
        .find(|m| m.container_path == "/vol")
        .unwrap();
    assert_eq!(m.image.as_ref().unwrap().image_ref, data_id);
    let chains = f.d.state_dir().join("snapshots/chains");
    assert_eq!(
        entries(&chains).len(),
        3,
        "busybox's layer and the data image's two"
    );

    // Removal leaves nothing: no mount, no view, no directory, and the removed image's
    // layers are collected.
    f.remove_container(&id).await;
    assert!(mounts_under(&bundle).is_empty());
    assert!(!bundle.exists());
    assert!(!entries(&snapshots).iter().any(|v| v.starts_with(&id)));
    assert_eq!(entries(&chains).len(), 1, "only busybox's layer is left");

    // Refusals name the field.
    let data_id = f.pull(&data).await;
    let refuse = |m: cri::Mount| {
        ContainerBuilder::new("bad", &image)
            .command(["/bin/true"])
            .mount(m)
    };
    let cases = [
        (
            cri::Mount {
                readonly: false,
                ..image_volume(&data_id, "/v", "")
            },
            Code::InvalidArgument,
            "config.mounts[0].readonly",
        ),
        (
            image_volume(&data_id, "/v", "data/missing"),
            Code::InvalidArgument,
            "config.mounts[0].image_sub_path",
        ),
        (
            image_volume(&data_id, "/v", "data/hello.txt"),
            Code::InvalidArgument,
            "config.mounts[0].image_sub_path",
        ),
        (
            image_volume(&data_id, "/v", "../etc"),
            Code::InvalidArgument,
            "config.mounts[0].image_sub_path",
        ),
        (
            image_volume("test/never-pulled:v1", "/v", ""),
            Code::NotFound,
            "config.mounts[0].image",
        ),
    ];
    for (m, code, field) in cases {
        let err = f.create(&pod, refuse(m)).await.unwrap_err();
        assert_refused(&err, code, field);
    }
    // Nothing of the refused containers is left.
    assert!(entries(&f.d.run_dir().join("containers")).is_empty());
    assert!(!entries(&snapshots).iter().any(|v| v.contains("-v")));
    f.finish().await;
}

async fn recursive_read_only_mounts(runtime: Runtime) {
    let (mut f, image, pod) = busybox_pod("wl-rro", runtime).await;
    let st = runtime_status(&mut f).await;
    let handler = st
        .runtime_handlers
        .iter()
        .find(|h| h.name == runtime.handler())
        .unwrap();
    assert!(
        handler.features.unwrap().recursive_read_only_mounts,
        "{handler:?}"
    );
    // A host directory with a tmpfs mounted under it.
    let src = f.path("rro-src");
    let sub = src.join("tmpfs");
    std::fs::create_dir_all(&sub).unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&sub)
        .status()
        .unwrap();
    assert!(status.success(), "mounting a tmpfs for the test");
    let rro = cri::Mount {
        container_path: "/rro".into(),
        host_path: src.display().to_string(),
        readonly: true,
        recursive_read_only: true,
        ..Default::default()
    };
    let c = ContainerBuilder::new("rro", &image)
        .command(["/bin/sleep", "100000"])
        .mount(rro.clone())
        .bind_readonly(&src, "/plain");
    let id = f.run(&pod, c).await;
    for path in ["/rro/x", "/rro/tmpfs/x", "/plain/x"] {
        let (code, _, err) = sh(&mut f, &id, &format!("touch {path}")).await;
        assert_ne!(code, 0, "{path} must be read-only");
        assert!(err.contains("Read-only file system"), "{path}: {err}");
    }
    // runc declares `rro` and is handed it; crun 1.8.1 cannot say (no `features`
    // command), so crius hands it a read-only clone of the tree from the bundle.
    let info = verbose_info(&mut f, &id).await;
    let spec_mount = info["runtimeSpec"]["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/rro")
        .unwrap()
        .clone();
    let bundle = f.d.run_dir().join("containers").join(&id);
    let options: Vec<&str> = spec_mount["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    match runtime {
        Runtime::Runc => {
            assert!(options.contains(&"rro"), "{spec_mount}");
            assert_eq!(spec_mount["source"], src.display().to_string());
        }
        Runtime::Crun => {
            assert!(
                options.contains(&"ro") && !options.contains(&"rro"),
                "{spec_mount}"
            );
            let clone = bundle.join("rro/0");
            assert_eq!(spec_mount["source"], clone.display().to_string());
            let mounts = mounts_under(&bundle);
            assert!(
                mounts.iter().any(|m| Path::new(m).starts_with(&clone)),
                "{mounts:?}"
            );
        }
    }
    // Without recursive_read_only the submount stays writable: the check above can fail.
    let (code, _, err) = sh(&mut f, &id, "touch /plain/tmpfs/x && rm /plain/tmpfs/x").await;
    assert_eq!(
        code, 0,
        "a plain read-only bind keeps its submounts writable: {err}"
    );
    // The source is untouched on the host.
    std::fs::write(sub.join("host-file"), b"x").expect("the host's tmpfs stays writable");
    std::fs::remove_file(sub.join("host-file")).unwrap();
    f.remove_container(&id).await;
    assert!(mounts_under(&bundle).is_empty());
    assert!(!bundle.exists());

    // Refusals name the field.
    for (m, field) in [
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
        (
            cri::Mount {
                readonly: false,
                ..rro.clone()
            },
            "config.mounts[0].readonly",
        ),
    ] {
        let c = ContainerBuilder::new("bad", &image)
            .command(["/bin/true"])
            .mount(m);
        let err = f.create(&pod, c).await.unwrap_err();
        assert_refused(&err, Code::InvalidArgument, field);
    }
    let status = std::process::Command::new("umount")
        .arg(&sub)
        .status()
        .unwrap();
    assert!(status.success());
    f.finish().await;
}

async fn supplemental_groups_policy(runtime: Runtime) {
    let (mut f, image, pod) = busybox_pod("wl-groups", runtime).await;
    let st = runtime_status(&mut f).await;
    assert!(st.features.unwrap().supplemental_groups_policy);
    // busybox's /etc/group puts app (1000) in staff (50).
    for (policy, want) in [
        (cri::SupplementalGroupsPolicy::Merge, vec![50, 1000, 1234]),
        (cri::SupplementalGroupsPolicy::Strict, vec![1000, 1234]),
    ] {
        let c = ContainerBuilder::new(&format!("groups-{}", policy as i32), &image)
            .command(["/bin/sh", "-c", "id -G; exec sleep 100000"])
            .security_context(cri::LinuxContainerSecurityContext {
                run_as_user: Some(cri::Int64Value { value: 1000 }),
                supplemental_groups: vec![1234],
                supplemental_groups_policy: policy as i32,
                ..Default::default()
            });
        let id = f.run(&pod, c).await;
        let user = f.status(&id).await.user.unwrap().linux.unwrap();
        let mut groups = user.supplemental_groups.clone();
        groups.sort();
        assert_eq!((user.uid, user.gid), (1000, 1000), "{policy:?}");
        assert_eq!(groups, want, "{policy:?}: {user:?}");
        // The process has exactly those groups, the first process and an exec'd one.
        let parse = |s: &str| {
            let mut v: Vec<i64> = s.split_whitespace().map(|g| g.parse().unwrap()).collect();
            v.sort();
            v.dedup();
            v
        };
        let (code, out, err) = sh(&mut f, &id, "id -u; id -g; id -G").await;
        assert_eq!(code, 0, "{err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(&lines[..2], ["1000", "1000"], "{policy:?}");
        assert_eq!(parse(lines[2]), want, "{policy:?}: {out}");
        let name = format!("groups-{}", policy as i32);
        let log = eventually(
            std::time::Duration::from_secs(10),
            "the first process's id -G",
            || {
                let log = f.log_of(&name);
                async move { (!log.is_empty()).then_some(log) }
            },
        )
        .await;
        let first = log
            .lines()
            .next()
            .unwrap()
            .splitn(4, ' ')
            .nth(3)
            .unwrap()
            .to_string();
        assert_eq!(parse(&first), want, "{policy:?}: {log}");
        f.remove_container(&id).await;
    }
    f.finish().await;
}

fn userns(mode: cri::NamespaceMode, maps: &[(u32, u32, u32)]) -> cri::UserNamespace {
    let maps: Vec<cri::IdMapping> = maps
        .iter()
        .map(|&(container_id, host_id, length)| cri::IdMapping {
            container_id,
            host_id,
            length,
        })
        .collect();
    cri::UserNamespace {
        mode: mode as i32,
        uids: maps.clone(),
        gids: maps,
    }
}

fn owner(path: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.uid(), m.gid())
}

async fn user_namespaces(runtime: Runtime) {
    let (mut f, image, plain_pod) = busybox_pod("wl-userns", runtime).await;
    let st = runtime_status(&mut f).await;
    for h in &st.runtime_handlers {
        assert!(h.features.unwrap().user_namespaces, "{h:?}");
    }
    // Distinct host ranges per runtime, so the two runs can share a machine.
    let base: u32 = match runtime {
        Runtime::Runc => 3_000_000,
        Runtime::Crun => 4_000_000,
    };
    let ns = userns(cri::NamespaceMode::Pod, &[(0, base, 65536)]);
    let pod = f
        .pod(
            PodBuilder::new("wl-userns-pod")
                .log_directory(f.logs())
                .pid_mode(cri::NamespaceMode::Pod)
                .userns(ns.clone()),
        )
        .await;
    // A host directory owned by the host's root, and a file in it.
    let vol = f.path("userns-vol");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::write(vol.join("by-root"), b"x").unwrap();
    std::os::unix::fs::chown(&vol, Some(0), Some(0)).unwrap();
    let mapped = |path: &str, readonly: bool| cri::Mount {
        container_path: path.into(),
        host_path: vol.display().to_string(),
        readonly,
        uid_mappings: ns.uids.clone(),
        gid_mappings: ns.gids.clone(),
        ..Default::default()
    };
    let c = ContainerBuilder::new("userns", &image)
        .command(["/bin/sleep", "100000"])
        .run_as_user(0)
        .userns(ns.clone())
        .mount(mapped("/vol", false))
        .mount(mapped("/vol-ro", true))
        .bind(&vol, "/unmapped");
    let id = f.run(&pod, c).await;
    // Inside: root, in a namespace with the pod's map; the image's, the volume's and
    // the pod's files are root's.
    let (code, out, err) = sh(
        &mut f,
        &id,
        "cat /proc/self/uid_map; id -u; stat -c %u:%g / /bin/busybox /vol/by-root /etc/hosts /etc/resolv.conf /etc/hostname; stat -c %u /unmapped/by-root",
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    let map: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(map, ["0", &base.to_string(), "65536"], "{out}");
    assert_eq!(lines[1], "0", "{out}");
    for l in &lines[2..8] {
        assert_eq!(*l, "0:0", "{out}");
    }
    // Without an idmap the host's root is nobody inside.
    assert_eq!(lines[8], "65534", "{out}");
    // Writes: the rootfs and the mapped volume take them, the read-only one refuses.
    let (code, _, err) = sh(&mut f, &id, "echo a > /made && echo b > /vol/made").await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = sh(&mut f, &id, "touch /vol-ro/nope").await;
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");
    // From the host: the container's processes run as the mapped uid; what it wrote
    // to the volume is root's on disk (through the idmap), what it wrote to its
    // rootfs is the mapped root's, and the image's files (0 on disk) look like the
    // mapped root's through the idmapped layers.
    let info = verbose_info(&mut f, &id).await;
    let pid = info["pid"].as_u64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid_line.split_whitespace().nth(1),
        Some(base.to_string().as_str()),
        "{uid_line}"
    );
    assert_eq!(owner(&vol.join("made")), (0, 0));
    let root = std::path::PathBuf::from(format!("/proc/{pid}/root"));
    assert_eq!(owner(&root.join("made")), (base, base));
    assert_eq!(owner(&root.join("bin/busybox")), (base, base));
    // A daemon that dies and comes back finds the container running in its user
    // namespace.
    f.d.crash_and_restart().await;
    let (code, out, err) = sh(&mut f, &id, "id -u; cat /made").await;
    assert_eq!((code, out.as_str()), (0, "0\na\n"), "{err}");
    // The image on disk is untouched: its files are still root's.
    let layers = f.d.state_dir().join("snapshots");
    let busybox_on_disk = walk_find(&layers, "busybox");
    assert!(!busybox_on_disk.is_empty());
    for p in &busybox_on_disk {
        if !p.to_string_lossy().contains("/fs/") {
            continue;
        }
        let (uid, _) = owner(p);
        assert!(uid == 0 || uid == base, "{}: {uid}", p.display());
    }
    // Leaves nothing: no mount under the bundle, no staging directory.
    let bundle = f.d.run_dir().join("containers").join(&id);
    f.remove_container(&id).await;
    assert!(
        mounts_under(&bundle).is_empty(),
        "{:?}",
        mounts_under(&bundle)
    );
    assert!(!bundle.exists());

    // Refusals name the field.
    let bad_mount = cri::Mount {
        uid_mappings: vec![cri::IdMapping {
            container_id: 0,
            host_id: base + 1,
            length: 65536,
        }],
        ..mapped("/vol", false)
    };
    for (p, m, field) in [
        (&pod, bad_mount.clone(), "config.mounts[0].uid_mappings"),
        (
            &plain_pod,
            mapped("/vol", false),
            "config.mounts[0].uid_mappings",
        ),
    ] {
        let c = ContainerBuilder::new("bad", &image)
            .command(["/bin/true"])
            .mount(m);
        let err = f.create(p, c).await.unwrap_err();
        assert_refused(&err, Code::InvalidArgument, field);
    }
    let opts = "config.linux.security_context.namespace_options.userns_options";
    for (ns, field) in [
        (
            userns(
                cri::NamespaceMode::Pod,
                &[(0, base, 100), (100, base + 200, 100)],
            ),
            format!("{opts}.uids"),
        ),
        (
            userns(cri::NamespaceMode::Pod, &[(1, base, 100)]),
            format!("{opts}.uids[0].container_id"),
        ),
        (
            userns(cri::NamespaceMode::Container, &[]),
            format!("{opts}.mode"),
        ),
        (
            userns(cri::NamespaceMode::Target, &[]),
            format!("{opts}.mode"),
        ),
    ] {
        let err = run_pod(
            &mut f.d.rt,
            PodBuilder::new("wl-userns-bad").userns(ns).build(),
        )
        .await
        .unwrap_err();
        assert_refused(&err, Code::InvalidArgument, &field);
    }
    f.finish().await;
}

/// Every path under `dir` whose file name is `name`.
fn walk_find(dir: &Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(p),
                _ if e.file_name() == name => found.push(p),
                _ => {}
            }
        }
    }
    found
}

crius_testkit::runtime_matrix!(
    tokio: image_volumes,
    recursive_read_only_mounts,
    supplemental_groups_policy,
    user_namespaces,
);
