//! Finding images and describing them: [`Images::find`] by id, id prefix, tag or
//! digest reference; the CRI view; the verbose status detail; what a container of
//! the image runs with.

use std::collections::HashMap;

use crius_cri_api::v1 as cri;
use crius_snapshotter::Digest;
use crius_spec::ImageConfig;
use crius_store::ImageRecord;

use crate::error::{ImageError, Result};
use crate::manifest::{self, ImageConfigFile};
use crate::reference::Reference;
use crate::{Images, blocking};

/// What a container needs from its image.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRunConfig {
    /// What the container's spec takes from the image (entrypoint, cmd, env, working
    /// dir, user, stop signal); serialised inline.
    #[serde(flatten)]
    pub config: ImageConfig,
    /// `VOLUME` paths, sorted.
    pub volumes: Vec<String>,
    /// The image's labels.
    pub labels: HashMap<String, String>,
    /// The top layer's chain id: the parent of a container's writable snapshot.
    pub top_chain_id: Option<String>,
}

impl Images {
    /// Resolves an image spec (id, unique id prefix of at least 4 hex digits, tag or
    /// digest reference) to its record; `None` when nothing matches.
    pub async fn find(&self, spec: &str) -> Result<Option<ImageRecord>> {
        let spec = spec.trim().to_string();
        if spec.is_empty() {
            return Ok(None);
        }
        let store = self.store.clone();
        blocking("looking up an image", move || {
            let db = store.blocking();
            let failed =
                |e| ImageError::store(format!("looking up image {spec:?}"), store.path(), e);
            let as_id = if spec.starts_with("sha256:") {
                spec.clone()
            } else {
                format!("sha256:{spec}")
            };
            if let Some(img) = db.image(&as_id).map_err(failed)? {
                return Ok(Some(img));
            }
            if let Ok(r) = Reference::parse(&spec) {
                let mut keys = Vec::new();
                if let Some(d) = &r.digest {
                    keys.push(r.with_digest(d));
                }
                if let Some(t) = r.tagged() {
                    if r.digest.is_none() || spec.contains(':') {
                        keys.push(t);
                    }
                }
                for k in keys {
                    if let Some(id) = db.image_id_by_ref(&k).map_err(failed)? {
                        return db.image(&id).map_err(failed);
                    }
                }
            }
            // A unique id prefix, as crictl shortens ids.
            let hex = spec.trim_start_matches("sha256:");
            if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                let mut found: Vec<ImageRecord> = db
                    .images()
                    .map_err(failed)?
                    .into_iter()
                    .filter(|i| i.id.trim_start_matches("sha256:").starts_with(hex))
                    .collect();
                if found.len() == 1 {
                    return Ok(found.pop());
                }
            }
            Ok(None)
        })
        .await
    }

    /// The CRI view of an image.
    pub async fn to_cri(&self, img: &ImageRecord) -> Result<cri::Image> {
        let cfg = self.config_of(img).await?;
        let (uid, username) = manifest::user_of(&cfg.run().user);
        Ok(cri::Image {
            id: img.id.clone(),
            repo_tags: img.repo_tags.clone(),
            repo_digests: img.repo_digests.clone(),
            size: img.size,
            uid: uid.map(|value| cri::Int64Value { value }),
            username,
            spec: Some(cri::ImageSpec {
                image: img.id.clone(),
                annotations: HashMap::new(),
                user_specified_image: String::new(),
                runtime_handler: String::new(),
                image_ref: String::new(),
            }),
            pinned: img.refs().any(|r| self.pinned.contains(r)),
        })
    }

    /// The config blob of an image (its id is the config's digest), verified.
    pub(crate) async fn config_bytes(&self, id: &str) -> Result<Vec<u8>> {
        let content = self.content.clone();
        let context = format!("reading the config of image {id}");
        let root = content.root().to_path_buf();
        let id = Digest::parse(id).map_err(|e| ImageError::snapshotter(&context, &root, e))?;
        blocking("reading an image config", move || {
            content
                .read(&id)
                .map_err(|e| ImageError::snapshotter(&context, &root, e))
        })
        .await
    }

    async fn config_of(&self, img: &ImageRecord) -> Result<ImageConfigFile> {
        let bytes = self.config_bytes(&img.id).await?;
        ImageConfigFile::parse(&bytes).map_err(|reason| ImageError::InvalidImage {
            context: format!("reading the config of image {}", img.id),
            reason,
            source: None,
        })
    }

    /// The verbose ImageStatus detail (the `info` key): the record's id, manifest
    /// digest, layers and size, the raw config (`imageSpec`) and the run config.
    pub async fn status_detail(&self, img: &ImageRecord) -> Result<serde_json::Value> {
        let bytes = self.config_bytes(&img.id).await?;
        let spec: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| ImageError::InvalidImage {
                context: format!("reading the config of image {}", img.id),
                reason: "it is not JSON".into(),
                source: Some(Box::new(e)),
            })?;
        Ok(serde_json::json!({
            "id": img.id,
            "manifestDigest": img.manifest_digest,
            "layers": img.layers,
            "size": img.size,
            "imageSpec": spec,
            "runConfig": self.run_config(img).await?,
        }))
    }

    /// What a container of this image runs with.
    pub async fn run_config(&self, img: &ImageRecord) -> Result<ImageRunConfig> {
        let cfg = self.config_of(img).await?;
        let run = cfg.run();
        let mut volumes: Vec<String> = run.volumes.unwrap_or_default().into_keys().collect();
        volumes.sort();
        Ok(ImageRunConfig {
            config: ImageConfig {
                entrypoint: run.entrypoint.unwrap_or_default(),
                cmd: run.cmd.unwrap_or_default(),
                env: run.env.unwrap_or_default(),
                working_dir: run.working_dir,
                user: run.user,
                stop_signal: run.stop_signal,
            },
            volumes,
            labels: run.labels.unwrap_or_default(),
            top_chain_id: img.layers.last().map(|l| l.chain_id.clone()),
        })
    }

    /// ListImages: every image (oldest pull first), or those the filter's spec
    /// finds.
    pub async fn list(&self, filter: Option<cri::ImageFilter>) -> Result<Vec<cri::Image>> {
        let wanted = filter
            .and_then(|f| f.image)
            .map(|s| s.image)
            .filter(|s| !s.is_empty());
        let records = match wanted {
            Some(spec) => self.find(&spec).await?.into_iter().collect::<Vec<_>>(),
            None => {
                let mut all = self
                    .store
                    .images()
                    .await
                    .map_err(|e| ImageError::store("listing images", self.store.path(), e))?;
                all.sort_by_key(|i| i.pulled_at);
                all
            }
        };
        let mut out = Vec::new();
        for r in &records {
            out.push(self.to_cri(r).await?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_config_serialises_flat_in_camel_case() {
        let run = ImageRunConfig {
            config: ImageConfig {
                working_dir: "/home".into(),
                stop_signal: "SIGUSR1".into(),
                ..ImageConfig::default()
            },
            volumes: vec!["/data".into()],
            top_chain_id: Some("sha256:00".into()),
            ..ImageRunConfig::default()
        };
        let v = serde_json::to_value(&run).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut want = [
            "entrypoint",
            "cmd",
            "env",
            "workingDir",
            "user",
            "stopSignal",
            "volumes",
            "labels",
            "topChainId",
        ];
        want.sort_unstable();
        assert_eq!(keys, want);
        assert_eq!(v["workingDir"], "/home");
        assert_eq!(v["stopSignal"], "SIGUSR1");
        assert_eq!(v["volumes"][0], "/data");
    }
}
