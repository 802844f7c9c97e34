//! Image pulls against real registries: references, layers, indexes, auth and
//! mirrors, RemoveImage and garbage collection, and failures (corrupt, stalled,
//! hostile, too large, a full disk).
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use crius_e2e::images::*;
use crius_e2e::registry::*;
use crius_e2e::v1 as cri;
use crius_e2e::*;
use serde_json::json;
use tonic::Code;

async fn pull(
    d: &mut Daemon,
    image: &str,
    auth: Option<cri::AuthConfig>,
) -> Result<String, tonic::Status> {
    pull_image(&mut d.img, image, auth).await
}

async fn status(d: &mut Daemon, image: &str, verbose: bool) -> cri::ImageStatusResponse {
    d.img
        .image_status(cri::ImageStatusRequest {
            image: Some(image_spec(image)),
            verbose,
        })
        .await
        .expect("ImageStatus")
        .into_inner()
}

async fn remove(d: &mut Daemon, image: &str) {
    d.img
        .remove_image(cri::RemoveImageRequest {
            image: Some(image_spec(image)),
        })
        .await
        .expect("RemoveImage");
}

async fn list(d: &mut Daemon) -> Vec<cri::Image> {
    d.img
        .list_images(cri::ListImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .images
}

/// ListImages filtered by `image`.
async fn list_named(d: &mut Daemon, image: &str) -> Vec<cri::Image> {
    d.img
        .list_images(cri::ListImagesRequest {
            filter: Some(cri::ImageFilter {
                image: Some(image_spec(image)),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .images
}

async fn fs_bytes(d: &mut Daemon) -> (u64, u64) {
    let r = d
        .img
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let f = &r.image_filesystems[0];
    (f.used_bytes.unwrap().value, f.inodes_used.unwrap().value)
}

/// Blobs present in the daemon's content store.
fn stored_blobs(d: &Daemon) -> Vec<String> {
    let dir = d.state_dir().join("content/blobs/sha256");
    std::fs::read_dir(dir)
        .map(|e| {
            e.flatten()
                .map(|e| format!("sha256:{}", e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_by_tag_and_digest_status_list_remove() {
    let mut f = Fixture::start("img-basic", Options::default()).await;
    f.start_registry().await;
    let pushed = f.push_busybox(Comp::Gzip).await;
    let tag_ref = pushed.reference();
    let (bytes0, _) = fs_bytes(&mut f.d).await;

    let id = pull(&mut f.d, &tag_ref, None).await.expect("pull by tag");
    assert_eq!(id, pushed.config_digest, "image_ref is the config digest");

    let st = status(&mut f.d, &tag_ref, true).await;
    let img = st.image.expect("image present");
    assert_eq!(img.id, id);
    assert_eq!(img.repo_tags, vec![tag_ref.clone()]);
    let digest_ref = pushed.digest_reference();
    assert_eq!(img.repo_digests, vec![digest_ref.clone()]);
    assert_eq!(img.uid.unwrap().value, 1000, "uid from USER 1000:1000");
    assert!(img.username.is_empty());
    assert!(!img.pinned);
    let layer_size: u64 =
        serde_json::from_slice::<serde_json::Value>(&pushed.manifest).unwrap()["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["size"].as_u64().unwrap())
            .sum();
    let config_size =
        serde_json::from_slice::<serde_json::Value>(&pushed.manifest).unwrap()["config"]["size"]
            .as_u64()
            .unwrap();
    assert_eq!(img.size, layer_size + config_size);
    let info: serde_json::Value = serde_json::from_str(&st.info["info"]).unwrap();
    assert_eq!(info["imageSpec"]["config"]["User"], "1000:1000");
    let run = &info["runConfig"];
    assert_eq!(run["env"], json!(["PATH=/bin", "GREETING=hello"]));
    assert_eq!(run["workingDir"], "/home");
    assert_eq!(run["entrypoint"], json!(["/bin/sh", "-c"]));
    assert_eq!(run["cmd"], json!(["echo $GREETING"]));
    assert_eq!(run["stopSignal"], "SIGUSR1");
    assert_eq!(run["volumes"], json!(["/data"]));
    assert!(run["topChainId"].as_str().unwrap().starts_with("sha256:"));

    // Every way of naming it finds it.
    for name in [
        id.clone(),
        id.trim_start_matches("sha256:")[..12].to_string(),
        digest_ref.clone(),
    ] {
        assert_eq!(
            status(&mut f.d, &name, false).await.image.map(|i| i.id),
            Some(id.clone()),
            "{name}"
        );
    }
    // A missing image is a nil image, not an error.
    assert!(
        status(&mut f.d, &format!("{}/test/nothing:v1", pushed.host), false)
            .await
            .image
            .is_none()
    );
    let listed = list(&mut f.d).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(list_named(&mut f.d, &tag_ref).await.len(), 1);
    assert!(list_named(&mut f.d, "busybox:nope").await.is_empty());

    // By digest: the same image.
    assert_eq!(pull(&mut f.d, &digest_ref, None).await.unwrap(), id);
    let (bytes1, _) = fs_bytes(&mut f.d).await;
    assert!(
        bytes1 > bytes0 + layer_size,
        "ImageFsInfo counts the pulled image: {bytes0} -> {bytes1}"
    );

    // Errors name what was wrong.
    let err = pull(
        &mut f.d,
        &format!("{}/test/busybox:missing", pushed.host),
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    let err = pull(&mut f.d, "UPPER/case", None).await.unwrap_err();
    assert_refused(&err, Code::InvalidArgument, "image.image");
    // Too long a name, or control characters: refused before the registry is asked.
    let host = pushed.host.clone();
    for bad in [
        format!("{host}/test/{}:v1", "a".repeat(250)),
        format!("{host}/test/busybox:v1\0"),
        format!("{host}/test/busy\nbox:v1"),
    ] {
        let err = pull(&mut f.d, &bad, None).await.unwrap_err();
        assert_refused(&err, Code::InvalidArgument, "image.image");
    }
    let log = std::fs::read_to_string(&f.registry().log_path).unwrap();
    for never_requested in ["a".repeat(50), "%00".into(), "%0A".into(), "%0a".into()] {
        assert!(
            !log.contains(&never_requested),
            "the registry was asked for a refused reference ({never_requested})"
        );
    }

    // Removing it by its tag removes the image, its digest reference included.
    remove(&mut f.d, &tag_ref).await;
    assert!(status(&mut f.d, &id, false).await.image.is_none());
    assert!(status(&mut f.d, &digest_ref, false).await.image.is_none());
    // Removing by id removes it and frees the bytes.
    assert_eq!(pull(&mut f.d, &digest_ref, None).await.unwrap(), id);
    remove(&mut f.d, &id).await;
    remove(&mut f.d, &id).await; // idempotent
    assert!(status(&mut f.d, &id, false).await.image.is_none());
    assert!(list(&mut f.d).await.is_empty());
    let (bytes2, _) = fs_bytes(&mut f.d).await;
    assert_eq!(
        bytes2, bytes0,
        "RemoveImage frees what ImageFsInfo reported"
    );
    assert!(
        stored_blobs(&f.d).is_empty(),
        "no blob left: {:?}",
        stored_blobs(&f.d)
    );
    f.finish().await;
}

/// Committed layer directories in the daemon's snapshotter.
fn stored_layer_dirs(d: &Daemon) -> Vec<String> {
    let dir = d.state_dir().join("snapshots/layers");
    std::fs::read_dir(dir)
        .map(|e| {
            e.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn remove_by_its_only_tag_removes_the_image_and_frees_its_layers() {
    let mut f = Fixture::start("img-rmi-tag", Options::default()).await;
    f.start_registry().await;
    let pushed = f
        .push(ImageBuilder::busybox(Comp::Gzip).unwrap().repo("test/rmi"))
        .await;
    let tag_ref = pushed.reference();
    let digest_ref = pushed.digest_reference();
    let id = pull(&mut f.d, &tag_ref, None).await.expect("pull by tag");
    assert_eq!(id, pushed.config_digest);
    assert!(
        !stored_layer_dirs(&f.d).is_empty(),
        "the layer was unpacked"
    );
    for blob in pushed.layer_digests.iter().chain([&pushed.config_digest]) {
        assert_eq!(f.registry().blob_gets(blob), 1, "{blob} fetched once");
    }

    // `crictl rmi REPO:TAG`: the image goes with all its references.
    remove(&mut f.d, &tag_ref).await;
    let listed = list(&mut f.d).await;
    assert!(
        listed.is_empty(),
        "nothing is listed after removing the image by its tag: {listed:?}"
    );
    for name in [&tag_ref, &digest_ref, &id] {
        assert!(
            status(&mut f.d, name, false).await.image.is_none(),
            "ImageStatus {name} after RemoveImage by tag"
        );
    }
    assert!(
        stored_layer_dirs(&f.d).is_empty(),
        "layer directories left: {:?}",
        stored_layer_dirs(&f.d)
    );
    assert!(
        stored_blobs(&f.d).is_empty(),
        "blobs left: {:?}",
        stored_blobs(&f.d)
    );

    // The next pull is no cache hit: every blob comes from the registry again.
    assert_eq!(
        pull(&mut f.d, &tag_ref, None).await.expect("pull again"),
        id
    );
    for blob in pushed.layer_digests.iter().chain([&pushed.config_digest]) {
        assert_eq!(f.registry().blob_gets(blob), 2, "{blob} fetched again");
    }
    // By the digest reference and by an id prefix, likewise.
    remove(&mut f.d, &digest_ref).await;
    assert!(list(&mut f.d).await.is_empty());
    assert!(stored_blobs(&f.d).is_empty());
    pull(&mut f.d, &tag_ref, None)
        .await
        .expect("pull a third time");
    remove(&mut f.d, &id.trim_start_matches("sha256:")[..12]).await;
    assert!(list(&mut f.d).await.is_empty());
    assert!(stored_layer_dirs(&f.d).is_empty());
    assert!(stored_blobs(&f.d).is_empty());
    f.finish().await;
}

/// Mounts the image's read-only view from the daemon's snapshotter and returns
/// the mount point (unmount it with `crius_snapshotter::unmount`).
fn mount_view(d: &Daemon, top_chain_id: &str) -> std::path::PathBuf {
    let snaps = crius_snapshotter::Snapshotter::open(&d.state_dir().join("snapshots")).unwrap();
    let chain = crius_snapshotter::Digest::parse(top_chain_id).unwrap();
    let mounts = snaps.view_mounts(&chain).unwrap();
    let target = d.root.join("fixtures/view");
    std::fs::create_dir_all(&target).unwrap();
    crius_snapshotter::mount_all(&mounts, &target).unwrap();
    target
}

async fn top_chain(d: &mut Daemon, image: &str) -> String {
    let st = status(d, image, true).await;
    let info: serde_json::Value = serde_json::from_str(&st.info["info"]).unwrap();
    info["runConfig"]["topChainId"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn layers_whiteouts_compressions_and_media_types() {
    let mut f = Fixture::start("img-layers", Options::default()).await;
    f.start_registry().await;
    let mut base = busybox_layer().unwrap();
    base.extend([
        Entry::Dir("data", 0o755),
        Entry::File("data/keep".into(), b"keep".to_vec(), 0o644),
        Entry::File("data/remove-me".into(), b"bye".to_vec(), 0o644),
        Entry::Dir("olddir", 0o755),
        Entry::File("olddir/a".into(), b"a".to_vec(), 0o644),
        Entry::File("olddir/b".into(), b"b".to_vec(), 0o644),
        Entry::Owned("data/owned".into(), b"o".to_vec(), 0o640, 1000, 50),
    ]);
    let upper = vec![
        Entry::Dir("data", 0o755),
        Entry::File("data/.wh.remove-me".into(), vec![], 0o644),
        Entry::Dir("olddir", 0o755),
        Entry::File("olddir/.wh..wh..opq".into(), vec![], 0o644),
        Entry::File("olddir/new".into(), b"new".to_vec(), 0o600),
        Entry::File("data/linked".into(), b"linked".to_vec(), 0o644),
        Entry::Hardlink("data/linked-too".into(), "data/linked".into()),
    ];
    let top = vec![Entry::File(
        "top.txt".into(),
        b"plain tar layer".to_vec(),
        0o644,
    )];
    let layers = ImageBuilder::new("test/layers")
        .layer(tar_of(&base), Comp::Gzip)
        .layer(tar_of(&upper), Comp::Zstd)
        .layer(tar_of(&top), Comp::None)
        .run_config(json!({"Cmd": ["/bin/sh"]}));
    let pushed = f.push(layers).await;
    let image = pushed.reference();
    let id = pull(&mut f.d, &image, None)
        .await
        .expect("gzip + zstd + plain layers");
    assert_eq!(id, pushed.config_digest);

    let chain = top_chain(&mut f.d, &image).await;
    let view = mount_view(&f.d, &chain);
    let check = std::panic::catch_unwind(|| {
        assert_eq!(std::fs::read(view.join("data/keep")).unwrap(), b"keep");
        assert!(
            !view.join("data/remove-me").exists(),
            "whiteout hides the file"
        );
        assert!(
            !view.join("olddir/a").exists(),
            "opaque dir hides the lower content"
        );
        assert!(!view.join("olddir/b").exists());
        assert_eq!(std::fs::read(view.join("olddir/new")).unwrap(), b"new");
        assert_eq!(
            std::fs::read(view.join("top.txt")).unwrap(),
            b"plain tar layer"
        );
        assert!(view.join("bin/busybox").is_file());
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let m = std::fs::metadata(view.join("data/owned")).unwrap();
        assert_eq!(
            (m.uid(), m.gid(), m.permissions().mode() & 0o7777),
            (1000, 50, 0o640)
        );
        assert_eq!(m.mtime(), 1_700_000_000);
        assert_eq!(
            std::fs::read_link(view.join("bin/sh"))
                .unwrap()
                .to_string_lossy(),
            "busybox"
        );
        let a = std::fs::metadata(view.join("data/linked")).unwrap();
        let b = std::fs::metadata(view.join("data/linked-too")).unwrap();
        assert_eq!(
            std::fs::read(view.join("data/linked-too")).unwrap(),
            b"linked"
        );
        assert_eq!(a.ino(), b.ino(), "hardlinked within the layer");
    });
    crius_snapshotter::unmount(&view).unwrap();
    std::fs::remove_dir(&view).unwrap();
    check.unwrap();

    // Docker schema 2 media types.
    let docker = ImageBuilder::new("test/docker")
        .layer(tar_of(&base), Comp::Gzip)
        .run_config(json!({"Cmd": ["/bin/sh"]}))
        .docker();
    let docker = f.push(docker).await;
    let id2 = pull(&mut f.d, &docker.reference(), None)
        .await
        .expect("docker media types");
    assert_eq!(id2, docker.config_digest);
    // The base layer is shared by both images: unpacked once, fetched once.
    let snaps = crius_snapshotter::Snapshotter::open(&f.d.state_dir().join("snapshots")).unwrap();
    assert_eq!(
        snaps.layers().unwrap().len(),
        3,
        "base layer shared; 3 chain ids in all"
    );

    remove(&mut f.d, &id).await;
    remove(&mut f.d, &id2).await;
    assert!(snaps.layers().unwrap().is_empty());
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn index_selects_the_node_platform() {
    let mut f = Fixture::start("img-index", Options::default()).await;
    f.start_registry().await;
    let native = ImageBuilder::busybox(Comp::Gzip).unwrap();
    let native = f.push(native.repo("test/multi").tag("native")).await;
    let other_arch = if host_arch() == "amd64" {
        "arm64"
    } else {
        "amd64"
    };
    let other = ImageBuilder::new("test/multi")
        .tag("other")
        .layer(file_layer("other", b"x".to_vec()), Comp::Gzip)
        .arch(other_arch);
    let other = f.push(other).await;
    let (first, second) = if host_arch() == "amd64" {
        ((&other, "arm64"), (&native, "amd64"))
    } else {
        ((&native, "arm64"), (&other, "amd64"))
    };
    let index_digest = push_index(f.registry(), "test/multi", "v1", &[first, second])
        .await
        .unwrap();
    let host = f.registry().host.clone();
    let image = format!("{host}/test/multi:v1");
    let id = pull(&mut f.d, &image, None)
        .await
        .expect("pull through an index");
    assert_eq!(id, native.config_digest, "the node's platform was chosen");
    let img = status(&mut f.d, &image, false).await.image.unwrap();
    assert_eq!(
        img.repo_digests,
        vec![format!("{host}/test/multi@{index_digest}")]
    );
    // An index with no manifest for this node is refused clearly.
    let only_other = push_index(
        f.registry(),
        "test/multi",
        "foreign",
        &[(&other, other_arch)],
    )
    .await
    .unwrap();
    let err = pull(&mut f.d, &format!("{host}/test/multi:foreign"), None)
        .await
        .unwrap_err();
    assert_refused(&err, Code::NotFound, other_arch);
    let _ = only_other;
    remove(&mut f.d, &id).await;
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_and_mirror() {
    let mut f = Fixture::start("img-auth", Options::default()).await;
    f.start_registry_with_auth("crius", "s3cret").await;
    let private = ImageBuilder::busybox(Comp::Gzip)
        .unwrap()
        .repo("test/private");
    let pushed = f.push(private.clone()).await;
    let image = pushed.reference();
    let err = pull(&mut f.d, &image, None).await.unwrap_err();
    assert_refused(&err, Code::Unauthenticated, "credentials");
    let bad = cri::AuthConfig {
        username: "crius".into(),
        password: "wrong".into(),
        ..Default::default()
    };
    let err = pull(&mut f.d, &image, Some(bad)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    let good = cri::AuthConfig {
        username: "crius".into(),
        password: "s3cret".into(),
        ..Default::default()
    };
    let id = pull(&mut f.d, &image, Some(good))
        .await
        .expect("pull with basic auth");
    assert_eq!(id, pushed.config_digest);
    // The docker-style `auth` field (base64 user:password) works too.
    remove(&mut f.d, &id).await;
    let b64 = cri::AuthConfig {
        auth: "Y3JpdXM6czNjcmV0".into(),
        ..Default::default()
    };
    assert_eq!(
        pull(&mut f.d, &image, Some(b64)).await.expect("auth field"),
        id
    );
    remove(&mut f.d, &id).await;
    f.finish().await;

    // Credentials from the config file (a second registry with the same user).
    let mut f = Fixture::start_with_registry(
        "img-auth-cfg",
        Some(("crius", "s3cret")),
        Options::config(
            "[images.credentials.\"{registry}\"]\nusername = \"crius\"\npassword = \"s3cret\"\n",
        ),
    )
    .await;
    let pushed = f.push(private).await;
    assert_eq!(
        pull(&mut f.d, &pushed.reference(), None)
            .await
            .expect("config credentials"),
        pushed.config_digest
    );
    remove(&mut f.d, &pushed.config_digest).await;
    f.finish().await;

    // A mirror (plain HTTP, loopback) serves an upstream that does not exist.
    let mut f = Fixture::start_with_registry(
        "img-mirror",
        None,
        Options::config("[images.mirrors]\n\"registry.crius.invalid\" = [\"{registry}\"]\n"),
    )
    .await;
    let app = ImageBuilder::busybox(Comp::Gzip).unwrap();
    let mirrored = f.push(app.repo("team/app").tag("v2")).await;
    let upstream_ref = "registry.crius.invalid/team/app:v2";
    let id = pull(&mut f.d, upstream_ref, None)
        .await
        .expect("pull through the mirror");
    assert_eq!(id, mirrored.config_digest);
    let img = status(&mut f.d, upstream_ref, false).await.image.unwrap();
    assert_eq!(
        img.repo_tags,
        vec![upstream_ref.to_string()],
        "references keep the upstream name"
    );
    assert!(f.registry().blob_gets(&mirrored.layer_digests[0]) == 1);
    remove(&mut f.d, &id).await;
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pulls_fetch_each_blob_once() {
    let mut f = Fixture::start("img-concurrent", Options::default()).await;
    f.start_registry().await;
    let mut shared = ImageBuilder::new("test/shared");
    for i in 0..3 {
        let data: Vec<u8> = (0..2_000_000u32)
            .map(|x| (x.wrapping_mul(2654435761).wrapping_add(i) >> 13) as u8)
            .collect();
        shared = shared.layer(file_layer(&format!("blob{i}"), data), Comp::Gzip);
    }
    let pushed = f.push(shared).await;
    let image = pushed.reference();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let mut img = f.d.img.clone();
        let image = image.clone();
        tasks.push(tokio::spawn(async move {
            pull_image(&mut img, &image, None).await
        }));
    }
    for t in tasks {
        assert_eq!(
            t.await.unwrap().expect("concurrent pull"),
            pushed.config_digest
        );
    }
    for digest in pushed.layer_digests.iter().chain([&pushed.config_digest]) {
        assert_eq!(
            f.registry().blob_gets(digest),
            1,
            "blob {digest} fetched once"
        );
    }
    assert_eq!(list(&mut f.d).await.len(), 1);
    remove(&mut f.d, &pushed.config_digest).await;
    f.finish().await;
}

/// A fake registry serving one image whose layer is served as `behaviour`.
async fn fake_with_layer(
    layer_bytes: &[u8],
    behaviour: impl FnOnce(Vec<u8>) -> BlobBehaviour,
) -> (FakeRegistry, String, String) {
    let tar = file_layer("f", layer_bytes.to_vec());
    let blob = compress(&tar, Comp::Gzip);
    let layer_digest = sha256(&blob);
    let config = serde_json::to_vec(&json!({"architecture": host_arch(), "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": [sha256(&tar)]}})).unwrap();
    let config_digest = sha256(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": blob.len()}],
    }))
    .unwrap();
    let manifests = HashMap::from([(
        "test/bad/manifests/v1".to_string(),
        (OCI_MANIFEST.to_string(), manifest),
    )]);
    let blobs = HashMap::from([
        (config_digest.clone(), BlobBehaviour::Serve(config)),
        (layer_digest.clone(), behaviour(blob)),
    ]);
    let fake = FakeRegistry::start(manifests, blobs).await.unwrap();
    let image = format!("{}/test/bad:v1", fake.host);
    (fake, image, layer_digest)
}

#[tokio::test(flavor = "multi_thread")]
async fn digest_mismatch_fails_and_leaves_nothing() {
    let mut f = Fixture::start("img-mismatch", Options::default()).await;
    let (fake, image, layer) = fake_with_layer(b"the real content", |mut blob| {
        let n = blob.len();
        blob[n - 9] ^= 0xff; // corrupt the gzip body, same length
        BlobBehaviour::Serve(blob)
    })
    .await;
    let err = pull(&mut f.d, &image, None).await.unwrap_err();
    assert!(err.message().to_lowercase().contains("digest"), "{err}");
    assert_eq!(err.code(), Code::DataLoss, "{err}");
    assert!(list(&mut f.d).await.is_empty());
    assert!(
        !stored_blobs(&f.d).contains(&layer),
        "the corrupt blob is not stored"
    );
    let snaps = crius_snapshotter::Snapshotter::open(&f.d.state_dir().join("snapshots")).unwrap();
    assert!(snaps.layers().unwrap().is_empty());
    drop(fake);
    // The config blob and manifests that did verify are garbage until an image uses them.
    remove(&mut f.d, &image).await;
    collect_leftovers(&mut f).await;
    f.finish().await;
}

/// Pulls and removes a small image so that GC sweeps blobs left by failed pulls.
async fn collect_leftovers(f: &mut Fixture) {
    f.start_registry().await;
    let x = ImageBuilder::new("gc/x").layer(file_layer("x", b"x".to_vec()), Comp::Gzip);
    let p = f.push(x).await;
    let id = pull(&mut f.d, &p.reference(), None).await.unwrap();
    remove(&mut f.d, &id).await;
    assert!(
        stored_blobs(&f.d).is_empty(),
        "left: {:?}",
        stored_blobs(&f.d)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_registry_hits_the_progress_timeout() {
    let mut f = Fixture::start(
        "img-stall",
        Options::config("[images]\nprogress_timeout_secs = 1\npull_attempts = 2\n"),
    )
    .await;
    let data: Vec<u8> = (0..300_000u32)
        .map(|x| (x.wrapping_mul(2654435761) >> 7) as u8)
        .collect();
    let (fake, image, layer) =
        fake_with_layer(&data, |blob| BlobBehaviour::StallAfter(blob, 1000)).await;
    let started = std::time::Instant::now();
    let err = tokio::time::timeout(DEADLINE, pull(&mut f.d, &image, None))
        .await
        .expect("the pull gives up by itself")
        .unwrap_err();
    assert!(err.message().contains("sent no data for 1s"), "{err}");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "two attempts of one second each"
    );
    let gets = fake
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(&layer))
        .count();
    assert_eq!(gets, 2, "retried once");
    assert!(list(&mut f.d).await.is_empty());
    drop(fake);
    collect_leftovers(&mut f).await;
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_mid_pull_then_restart_completes_reusing_blobs() {
    let mut f = Fixture::start(
        "img-crash",
        Options::config("[images]\nmax_concurrent_downloads = 1\n"),
    )
    .await;
    f.start_registry().await;
    let mut big = ImageBuilder::new("test/big");
    for i in 0..5 {
        let data: Vec<u8> = (0..4_000_000u32)
            .map(|x| (x.wrapping_mul(2246822519).wrapping_add(i * 7) >> 11) as u8)
            .collect();
        big = big.layer(file_layer(&format!("big{i}"), data), Comp::Gzip);
    }
    let pushed = f.push(big).await;
    let image = pushed.reference();
    let mut img = f.d.img.clone();
    let im = image.clone();
    let call = tokio::spawn(async move { pull_image(&mut img, &im, None).await });
    // Crash once at least one layer is stored and before the image is complete.
    let state = f.d.state_dir();
    let layer_digests = pushed.layer_digests.clone();
    eventually(DEADLINE, "a first layer blob to be stored", || {
        let dir = state.join("content/blobs/sha256");
        let layer_digests = layer_digests.clone();
        async move {
            let have: Vec<String> = std::fs::read_dir(&dir)
                .ok()?
                .flatten()
                .map(|e| format!("sha256:{}", e.file_name().to_string_lossy()))
                .collect();
            layer_digests.iter().any(|l| have.contains(l)).then_some(())
        }
    })
    .await;
    f.d.kill();
    let _ = call.await;
    f.d.spawn().await.unwrap();
    assert!(
        list(&mut f.d).await.is_empty(),
        "no partial image is visible after the crash"
    );
    let kept: Vec<String> = stored_blobs(&f.d)
        .into_iter()
        .filter(|b| pushed.layer_digests.contains(b))
        .collect();
    assert!(!kept.is_empty());
    let id = pull(&mut f.d, &image, None)
        .await
        .expect("the pull completes after the restart");
    assert_eq!(id, pushed.config_digest);
    for b in &kept {
        assert_eq!(
            f.registry().blob_gets(b),
            1,
            "verified blob {b} was reused, not fetched again"
        );
    }
    remove(&mut f.d, &id).await;
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malicious_layers_are_refused_and_write_nothing_outside() {
    let mut f = Fixture::start("img-evil", Options::default()).await;
    f.start_registry().await;
    let canary = f.path("canary");
    std::fs::create_dir_all(&canary).unwrap();
    let canary_s = canary.display().to_string();
    // Raw tar headers: the tar crate refuses to build some of these names itself.
    fn raw_tar(entries: &[(&str, u8, &str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, kind, link, data) in entries {
            let mut h = [0u8; 512];
            h[..name.len()].copy_from_slice(name.as_bytes());
            h[100..107].copy_from_slice(b"0000644");
            h[108..115].copy_from_slice(b"0000000");
            h[116..123].copy_from_slice(b"0000000");
            h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
            h[136..147].copy_from_slice(b"00000000000");
            h[156] = *kind;
            h[157..157 + link.len()].copy_from_slice(link.as_bytes());
            h[257..263].copy_from_slice(b"ustar\0");
            h[263..265].copy_from_slice(b"00");
            h[148..156].copy_from_slice(b"        ");
            let sum: u32 = h.iter().map(|&b| b as u32).sum();
            h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
            out.extend_from_slice(&h);
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.resize(out.len() + 1024, 0);
        out
    }
    let dotdot = format!("../../../../../../../..{canary_s}/dotdot");
    let abs_escape = format!("/../../../../..{canary_s}/abs");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("dotdot", raw_tar(&[(&dotdot, b'0', "", b"x")]), "dotdot"),
        (
            "abs-dotdot",
            raw_tar(&[(&abs_escape, b'0', "", b"x")]),
            "abs",
        ),
        (
            "symlink-dir",
            raw_tar(&[
                ("evil", b'2', &canary_s, b""),
                ("evil/through-link", b'0', "", b"x"),
            ]),
            "evil/through-link",
        ),
        (
            "symlink-rel",
            raw_tar(&[
                ("up", b'2', "../../../../../../../../../..", b""),
                (&format!("up{canary_s}/rel"), b'0', "", b"x"),
            ]),
            "rel",
        ),
        (
            "hardlink-out",
            raw_tar(&[("passwd", b'1', "/etc/passwd", b"")]),
            "passwd",
        ),
        (
            "hardlink-through-symlink",
            raw_tar(&[("l", b'2', "/etc", b""), ("pw", b'1', "l/passwd", b"")]),
            "pw",
        ),
        (
            "whiteout-out",
            raw_tar(&[("../.wh.canary", b'0', "", b"")]),
            ".wh.canary",
        ),
    ];
    for (name, tar, entry_hint) in cases {
        let evil = ImageBuilder::new(&format!("evil/{name}")).layer(tar, Comp::Gzip);
        let pushed = f.push(evil).await;
        let err = pull(&mut f.d, &pushed.reference(), None).await.unwrap_err();
        assert!(
            err.message().contains(entry_hint),
            "{name}: the error names the entry: {}",
            err.message()
        );
        assert_eq!(err.code(), Code::FailedPrecondition, "{name}: {err}");
        assert_eq!(
            std::fs::read_dir(&canary).unwrap().count(),
            0,
            "{name}: nothing written outside"
        );
    }
    assert!(
        std::fs::read_to_string("/etc/passwd")
            .unwrap()
            .contains("root:")
    );
    assert!(list(&mut f.d).await.is_empty());
    let snaps = crius_snapshotter::Snapshotter::open(&f.d.state_dir().join("snapshots")).unwrap();
    assert!(
        snaps.layers().unwrap().is_empty(),
        "no half-unpacked layer left"
    );
    collect_leftovers(&mut f).await;
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_decompression_bomb_stops_at_the_layer_limit() {
    let mut f = Fixture::start(
        "img-bomb",
        Options::config("[images]\nmax_layer_bytes = 1048576\n"),
    )
    .await;
    f.start_registry().await;
    // 16 MiB of zeros: about 16 KiB gzipped.
    let bomb = file_layer("zeros", vec![0u8; 16 << 20]);
    let pushed = f
        .push(ImageBuilder::new("evil/bomb").layer(bomb, Comp::Gzip))
        .await;
    let err = pull(&mut f.d, &pushed.reference(), None).await.unwrap_err();
    assert!(
        err.message().contains("1048576 bytes") && err.message().contains("max_layer_bytes"),
        "the error names the limit: {}",
        err.message()
    );
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(list(&mut f.d).await.is_empty());
    let snaps = crius_snapshotter::Snapshotter::open(&f.d.state_dir().join("snapshots")).unwrap();
    assert!(snaps.layers().unwrap().is_empty(), "no layer left");
    collect_leftovers(&mut f).await;
    f.finish().await;
}

/// Bytes no compressor can shrink (xorshift64).
fn incompressible(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Names in a directory (empty when it does not exist).
fn dir_entries(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|e| {
            e.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_fails_the_pull_cleanly_and_the_pull_works_once_there_is_room() {
    let mut f = Fixture::start("img-full", Options::default()).await;
    f.start_registry().await;
    // 6 MiB that stay 6 MiB gzipped: the blob fills the disk first.
    let big = tar_of(&[Entry::File(
        "big".into(),
        incompressible(6 << 20, 0x5eed),
        0o644,
    )]);
    // 12 MiB of one byte: a tiny blob, and the unpacked file fills the disk.
    let wide = tar_of(&[Entry::File("wide".into(), vec![b'x'; 12 << 20], 0o644)]);
    let mut pushed = Vec::new();
    for (repo, layer, store) in [
        ("test/big", big, "content"),
        ("test/wide", wide, "snapshots"),
    ] {
        let p = f
            .push(ImageBuilder::new(repo).layer(layer, Comp::Gzip))
            .await;
        pushed.push((p, store));
    }

    // The state dir on an 8 MiB tmpfs of its own (the test root is unique).
    f.d.stop().await.unwrap();
    let state = f.d.state_dir();
    nix::mount::mount(
        Some("tmpfs"),
        &state,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=8m,mode=0755"),
    )
    .expect("mounting a tmpfs on the state dir");
    f.d.spawn().await.unwrap();

    for (p, store) in &pushed {
        let image = p.reference();
        let err = pull(&mut f.d, &image, None).await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
        let full = format!("no space left for {}", state.join(store).display());
        assert!(
            err.message().contains(&full),
            "the message names the full store ({full}): {}",
            err.message()
        );
        assert!(
            err.message().starts_with(&format!("pulling {image}: ")),
            "{}",
            err.message()
        );
        // Nothing half-made is visible or left.
        assert!(list(&mut f.d).await.is_empty());
        assert!(status(&mut f.d, &image, false).await.image.is_none());
        for dir in [
            "content/ingest",
            "snapshots/tmp",
            "snapshots/layers",
            "snapshots/chains",
        ] {
            assert!(
                dir_entries(&state.join(dir)).is_empty(),
                "{image}: {dir}: {:?}",
                dir_entries(&state.join(dir))
            );
        }
        assert!(
            !stored_blobs(&f.d).contains(&p.layer_digests[0]),
            "{image}: no partial layer blob"
        );
    }

    // With room, the same pulls work.
    nix::mount::mount(
        None::<&str>,
        &state,
        None::<&str>,
        nix::mount::MsFlags::MS_REMOUNT,
        Some("size=64m"),
    )
    .expect("remounting the tmpfs bigger");
    for (p, _) in &pushed {
        assert_eq!(
            pull(&mut f.d, &p.reference(), None)
                .await
                .expect("pull with room"),
            p.config_digest
        );
    }
    assert_eq!(list(&mut f.d).await.len(), 2);
    for (p, _) in &pushed {
        remove(&mut f.d, &p.reference()).await;
    }
    assert!(list(&mut f.d).await.is_empty());
    assert!(stored_blobs(&f.d).is_empty(), "{:?}", stored_blobs(&f.d));

    f.d.stop().await.unwrap();
    nix::mount::umount(&state).expect("unmounting the test tmpfs");
    // The fixture's teardown talks to the daemon: back on the state dir it had.
    f.d.spawn().await.unwrap();
    f.finish().await;
}
