//! A full disk under criusd's state and run directories: CreateContainer and
//! RunPodSandbox fail with ResourceExhausted naming the path, leave nothing
//! half-made, and work again once there is room (the metadata store reopens itself
//! after the failed commits).
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};

use crius_e2e::images::*;
use crius_e2e::registry::*;
use crius_e2e::v1 as cri;
use crius_e2e::*;
use tonic::Code;

fn dir_entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|e| {
            e.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// One tmpfs of `size` at `<root>/disk`, bound onto the daemon's state and run
/// directories (so that filling one fills both). Returns the mount points, the
/// deepest last.
fn mount_disk(d: &Daemon, size: &str) -> Vec<PathBuf> {
    use nix::mount::{MsFlags, mount};
    let disk = d.root.join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    mount(
        Some("tmpfs"),
        &disk,
        Some("tmpfs"),
        MsFlags::empty(),
        Some(format!("size={size},mode=0755").as_str()),
    )
    .expect("mounting the test tmpfs");
    let mut points = vec![disk.clone()];
    for (sub, at) in [("state", d.state_dir()), ("run", d.run_dir())] {
        std::fs::create_dir_all(disk.join(sub)).unwrap();
        mount(
            Some(&disk.join(sub)),
            &at,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("binding the tmpfs onto the daemon's directory");
        points.push(at);
    }
    points
}

/// Fills the file system of `dir` with one file as large as the space left, and
/// checks that not one more page fits.
fn fill(dir: &Path) -> PathBuf {
    let st = nix::sys::statvfs::statvfs(dir).unwrap();
    let free = st.blocks_available() * st.fragment_size();
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0x5au8; 1 << 20];
    let mut left = free as usize;
    while left > 0 {
        let n = left.min(chunk.len());
        f.write_all(&chunk[..n]).expect("writing the filler");
        left -= n;
    }
    f.sync_all().unwrap();
    let probe = dir.join("probe");
    let err = std::fs::write(&probe, vec![0u8; 4096]).expect_err("the disk is full");
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    let _ = std::fs::remove_file(&probe);
    path
}

fn container_config(name: &str, image: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "3600".into()],
        linux: Some(cri::LinuxContainerConfig::default()),
        ..Default::default()
    }
}

async fn create(d: &mut Daemon, pod: &str, image: &str) -> Result<String, tonic::Status> {
    d.rt.create_container(cri::CreateContainerRequest {
        pod_sandbox_id: pod.into(),
        config: Some(container_config("fill", image)),
        sandbox_config: Some(PodBuilder::new("fulldisk").build()),
    })
    .await
    .map(|r| r.into_inner().container_id)
}

async fn containers(d: &mut Daemon) -> Vec<cri::Container> {
    d.rt.list_containers(cri::ListContainersRequest { filter: None })
        .await
        .expect("ListContainers")
        .into_inner()
        .containers
}

/// ResourceExhausted, naming a path on the full disk.
fn assert_full(what: &str, status: &tonic::Status, d: &Daemon) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{what}: {status}");
    let (state, run) = (d.state_dir(), d.run_dir());
    assert!(
        status.message().contains(&state.display().to_string())
            || status.message().contains(&run.display().to_string()),
        "{what}: the message names no path under {} or {}: {}",
        state.display(),
        run.display(),
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_fails_create_and_run_cleanly_and_both_work_once_there_is_room() {
    let mut d = Daemon::start("fulldisk").await;
    let reg = TestRegistry::start(&d.root.join("fixtures/registry"), None)
        .await
        .unwrap();
    let image = ImageBuilder::busybox(Comp::Gzip)
        .unwrap()
        .push(&reg)
        .await
        .unwrap()
        .reference();

    // The state and run directories on one 32 MiB tmpfs (the daemon restarts on it).
    d.stop().await.unwrap();
    let points = mount_disk(&d, "32m");
    d.spawn().await.unwrap();
    pull_image(&mut d.img, &image, None).await.expect("pull");
    let pod = run_pod(&mut d.rt, PodBuilder::new("fulldisk").build())
        .await
        .expect("RunPodSandbox with room");

    let filler = fill(&d.root.join("disk"));
    let err = create(&mut d, &pod, &image).await.unwrap_err();
    assert_full("CreateContainer", &err, &d);
    let err = run_pod(&mut d.rt, PodBuilder::new("fulldisk-2").build())
        .await
        .unwrap_err();
    assert_full("RunPodSandbox", &err, &d);

    // Nothing half-made: no record, bundle, writable layer or pod directory.
    assert!(containers(&mut d).await.is_empty());
    let pods: Vec<String> = list_pods(&mut d.rt, None)
        .await
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(pods, [pod.as_str()]);
    assert!(dir_entries(&d.run_dir().join("containers")).is_empty());
    assert_eq!(dir_entries(&d.run_dir().join("pods")), [pod.as_str()]);
    for dir in ["snapshots/snapshots", "snapshots/tmp"] {
        let left = dir_entries(&d.state_dir().join(dir));
        assert!(left.is_empty(), "{dir}: {left:?}");
    }

    // With room again, both calls work on the same daemon.
    std::fs::remove_file(&filler).unwrap();
    let id = create(&mut d, &pod, &image)
        .await
        .expect("CreateContainer with room");
    let pod2 = run_pod(&mut d.rt, PodBuilder::new("fulldisk-2").build())
        .await
        .expect("RunPodSandbox with room");
    assert_eq!(containers(&mut d).await.len(), 1);
    assert_eq!(list_pods(&mut d.rt, None).await.len(), 2);

    d.rt.remove_container(cri::RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .expect("RemoveContainer");
    for p in [&pod, &pod2] {
        remove_pod(&mut d.rt, p).await.unwrap();
    }
    remove_image_by_id(&mut d.img, &image).await;

    // What the daemon made on the tmpfs is gone (the tmpfs and its binds aside,
    // and the tmpfs seen a second time at <root>/disk), then the tmpfs goes.
    d.stop().await.unwrap();
    drop(reg);
    let disk = d.root.join("disk").display().to_string();
    let ours: Vec<String> = points.iter().map(|p| p.display().to_string()).collect();
    let leaks: Vec<String> = leaks(&d.root)
        .into_iter()
        .filter(|l| !ours.iter().any(|p| l == &format!("mount: {p}")))
        .filter(|l| !l.starts_with(&format!("file: {disk}")))
        .collect();
    assert!(leaks.is_empty(), "left on the tmpfs: {leaks:#?}");
    for p in points.iter().rev() {
        nix::mount::umount(p).expect("unmounting the test tmpfs");
    }
    std::fs::remove_dir(d.root.join("disk")).unwrap();
    d.finish().await;
}
