//! Image pulls against real registries (issue 3).
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

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
    d.img
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            auth,
            sandbox_config: None,
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

async fn status(d: &mut Daemon, image: &str, verbose: bool) -> cri::ImageStatusResponse {
    d.img
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            verbose,
        })
        .await
        .expect("ImageStatus")
        .into_inner()
}

async fn remove(d: &mut Daemon, image: &str) {
    d.img
        .remove_image(cri::RemoveImageRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
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
    let mut d = Daemon::start("img-basic").await;
    let reg = TestRegistry::start(&d.root.join("fixtures/registry"), None)
        .await
        .unwrap();
    let pushed = push_busybox(&reg, "test/busybox", "v1", Comp::Gzip)
        .await
        .unwrap();
    let tag_ref = pushed.reference(&reg.host);
    let (bytes0, _) = fs_bytes(&mut d).await;

    let id = pull(&mut d, &tag_ref, None).await.expect("pull by tag");
    assert_eq!(id, pushed.config_digest, "image_ref is the config digest");

    let st = status(&mut d, &tag_ref, true).await;
    let img = st.image.expect("image present");
    assert_eq!(img.id, id);
    assert_eq!(img.repo_tags, vec![tag_ref.clone()]);
    let digest_ref = format!("{}/test/busybox@{}", reg.host, pushed.manifest_digest);
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
            status(&mut d, &name, false).await.image.map(|i| i.id),
            Some(id.clone()),
            "{name}"
        );
    }
    // A missing image is a nil image, not an error.
    assert!(
        status(&mut d, &format!("{}/test/nothing:v1", reg.host), false)
            .await
            .image
            .is_none()
    );
    let listed = list(&mut d).await;
    assert_eq!(listed.len(), 1);
    let filtered = d
        .img
        .list_images(cri::ListImagesRequest {
            filter: Some(cri::ImageFilter {
                image: Some(cri::ImageSpec {
                    image: tag_ref.clone(),
                    ..Default::default()
                }),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(filtered.len(), 1);
    let none = d
        .img
        .list_images(cri::ListImagesRequest {
            filter: Some(cri::ImageFilter {
                image: Some(cri::ImageSpec {
                    image: "busybox:nope".into(),
                    ..Default::default()
                }),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(none.is_empty());

    // By digest: the same image.
    assert_eq!(pull(&mut d, &digest_ref, None).await.unwrap(), id);
    let (bytes1, _) = fs_bytes(&mut d).await;
    assert!(
        bytes1 > bytes0 + layer_size,
        "ImageFsInfo counts the pulled image: {bytes0} -> {bytes1}"
    );

    // Errors name what was wrong.
    let err = pull(&mut d, &format!("{}/test/busybox:missing", reg.host), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    let err = pull(&mut d, "UPPER/case", None).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("image.image"), "{}", err.message());

    // Removing the tag keeps the image (its digest reference is left).
    remove(&mut d, &tag_ref).await;
    let img = status(&mut d, &id, false)
        .await
        .image
        .expect("still there by digest");
    assert!(img.repo_tags.is_empty());
    // Removing by id removes it and frees the bytes.
    remove(&mut d, &id).await;
    remove(&mut d, &id).await; // idempotent
    assert!(status(&mut d, &id, false).await.image.is_none());
    assert!(list(&mut d).await.is_empty());
    let (bytes2, _) = fs_bytes(&mut d).await;
    assert_eq!(
        bytes2, bytes0,
        "RemoveImage frees what ImageFsInfo reported"
    );
    assert!(
        stored_blobs(&d).is_empty(),
        "no blob left: {:?}",
        stored_blobs(&d)
    );
    drop(reg);
    d.finish().await;
}
