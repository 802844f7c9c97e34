//! Test images, built from busybox-static and pushed with the registry API.

use anyhow::{Context, Result};
use serde_json::json;

use crate::registry::{TestRegistry, sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// How a layer is compressed in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comp {
    None,
    Gzip,
    Zstd,
}

/// One entry of a test layer.
#[derive(Debug, Clone)]
pub enum Entry {
    Dir(&'static str, u32),
    File(String, Vec<u8>, u32),
    /// A file with owner uid/gid.
    Owned(String, Vec<u8>, u32, u64, u64),
    Symlink(String, String),
    Hardlink(String, String),
}

/// An uncompressed tar of `entries`.
pub fn tar_of(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            Entry::Dir(p, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                b.append_data(&mut h, p, std::io::empty()).expect("tar dir");
            }
            Entry::File(p, data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, data.as_slice()).expect("tar file");
            }
            Entry::Owned(p, data, mode, uid, gid) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_uid(*uid);
                h.set_gid(*gid);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, data.as_slice()).expect("tar file");
            }
            Entry::Symlink(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, target).expect("tar symlink");
            }
            Entry::Hardlink(p, target) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_link(&mut h, p, target).expect("tar hardlink");
            }
        }
    }
    b.into_inner().expect("tar finish")
}

/// Compresses a tar.
pub fn compress(tar: &[u8], comp: Comp) -> Vec<u8> {
    match comp {
        Comp::None => tar.to_vec(),
        Comp::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut e, tar).expect("gzip");
            e.finish().expect("gzip finish")
        }
        Comp::Zstd => zstd::encode_all(tar, 3).expect("zstd"),
    }
}

/// The OCI media type of a layer.
pub fn layer_media_type(comp: Comp, docker: bool) -> &'static str {
    match (comp, docker) {
        (Comp::Gzip, true) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        (Comp::None, _) => "application/vnd.oci.image.layer.v1.tar",
        (Comp::Gzip, false) => "application/vnd.oci.image.layer.v1.tar+gzip",
        (Comp::Zstd, _) => "application/vnd.oci.image.layer.v1.tar+zstd",
    }
}

/// The applets linked in the test rootfs.
pub const APPLETS: &[&str] = &[
    "sh", "ls", "cat", "echo", "sleep", "id", "env", "pwd", "nc", "wget", "httpd", "touch",
    "mkdir", "rm", "head", "tail", "true", "false", "hostname", "grep", "stty", "printf", "seq",
    "yes", "dd", "stat", "test", "mount", "ps", "kill", "whoami", "wc", "tr", "unshare", "mv",
];

/// A busybox root filesystem layer.
pub fn busybox_layer() -> Result<Vec<Entry>> {
    let busybox = std::fs::read("/bin/busybox")
        .context("/bin/busybox is missing: install Debian's busybox-static")?;
    let mut e = vec![
        Entry::Dir("bin", 0o755),
        Entry::Dir("etc", 0o755),
        Entry::Dir("tmp", 0o1777),
        Entry::Dir("root", 0o700),
        Entry::Dir("home", 0o755),
        Entry::File("bin/busybox".into(), busybox, 0o755),
        Entry::File(
            "etc/passwd".into(),
            b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n".to_vec(),
            0o644,
        ),
        Entry::File(
            "etc/group".into(),
            b"root:x:0:\napp:x:1000:\nstaff:x:50:app\nnogroup:x:65534:\n".to_vec(),
            0o644,
        ),
    ];
    for a in APPLETS {
        e.push(Entry::Symlink(format!("bin/{a}"), "busybox".into()));
    }
    Ok(e)
}

/// A pushed image.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The registry's `host:port`.
    pub host: String,
    pub repo: String,
    pub tag: String,
    pub manifest_digest: String,
    pub manifest: Vec<u8>,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
    pub diff_ids: Vec<String>,
}

impl Pushed {
    /// `host/repo:tag`.
    pub fn reference(&self) -> String {
        format!("{}/{}:{}", self.host, self.repo, self.tag)
    }

    /// `host/repo@manifest-digest`.
    pub fn digest_reference(&self) -> String {
        format!("{}/{}@{}", self.host, self.repo, self.manifest_digest)
    }
}

/// A tar holding one regular file `name` (mode 0644) with `data`.
pub fn file_layer(name: &str, data: Vec<u8>) -> Vec<u8> {
    tar_of(&[Entry::File(name.to_string(), data, 0o644)])
}

/// An image to push: its layers (uncompressed tars, each with how the registry
/// holds it), its run config, platform and media types.
///
/// Defaults: tag `v1`, no layers, an empty run config, the node's architecture, OCI
/// media types.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    repo: String,
    tag: String,
    layers: Vec<(Vec<u8>, Comp)>,
    run_config: serde_json::Value,
    arch: String,
    docker: bool,
}

impl ImageBuilder {
    /// An image for `repo` (`test/busybox`).
    pub fn new(repo: &str) -> ImageBuilder {
        ImageBuilder {
            repo: repo.to_string(),
            tag: "v1".to_string(),
            layers: Vec::new(),
            run_config: json!({}),
            arch: host_arch().to_string(),
            docker: false,
        }
    }

    /// `test/busybox:v1`: the busybox root filesystem, its one layer `comp`ressed,
    /// with a run config of `USER 1000:1000`, env, workdir, entrypoint + cmd, a stop
    /// signal and a volume.
    pub fn busybox(comp: Comp) -> Result<ImageBuilder> {
        Ok(ImageBuilder::new("test/busybox")
            .layer(tar_of(&busybox_layer()?), comp)
            .run_config(json!({
                "User": "1000:1000",
                "Env": ["PATH=/bin", "GREETING=hello"],
                "WorkingDir": "/home",
                "Entrypoint": ["/bin/sh", "-c"],
                "Cmd": ["echo $GREETING"],
                "StopSignal": "SIGUSR1",
                "Volumes": {"/data": {}},
            })))
    }

    /// Another repository.
    pub fn repo(mut self, repo: &str) -> ImageBuilder {
        self.repo = repo.to_string();
        self
    }

    /// The tag.
    pub fn tag(mut self, tag: &str) -> ImageBuilder {
        self.tag = tag.to_string();
        self
    }

    /// Adds a layer on top: an uncompressed tar, stored `comp`ressed.
    pub fn layer(mut self, tar: Vec<u8>, comp: Comp) -> ImageBuilder {
        self.layers.push((tar, comp));
        self
    }

    /// The run config (the image config's `config`).
    pub fn run_config(mut self, config: serde_json::Value) -> ImageBuilder {
        self.run_config = config;
        self
    }

    /// Another architecture than the node's.
    pub fn arch(mut self, arch: &str) -> ImageBuilder {
        self.arch = arch.to_string();
        self
    }

    /// Docker schema 2 media types instead of OCI ones.
    pub fn docker(mut self) -> ImageBuilder {
        self.docker = true;
        self
    }

    /// Builds the config and manifest, pushes every blob and the manifest, and tags it.
    pub async fn push(self, reg: &TestRegistry) -> Result<Pushed> {
        let repo = self.repo.as_str();
        let mut diff_ids = Vec::new();
        let mut descs = Vec::new();
        let mut layer_digests = Vec::new();
        for (tar, comp) in &self.layers {
            diff_ids.push(sha256(tar));
            let blob = compress(tar, *comp);
            let digest = reg.push_blob(repo, &blob).await?;
            descs.push(json!({"mediaType": layer_media_type(*comp, self.docker), "digest": digest, "size": blob.len()}));
            layer_digests.push(digest);
        }
        let config = json!({
            "architecture": self.arch,
            "os": "linux",
            "config": self.run_config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [],
        });
        let config_bytes = serde_json::to_vec(&config)?;
        let config_digest = reg.push_blob(repo, &config_bytes).await?;
        let (mt, cmt) = if self.docker {
            (DOCKER_MANIFEST, DOCKER_CONFIG)
        } else {
            (OCI_MANIFEST, OCI_CONFIG)
        };
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": mt,
            "config": {"mediaType": cmt, "digest": config_digest, "size": config_bytes.len()},
            "layers": descs,
        });
        let manifest_bytes = serde_json::to_vec(&manifest)?;
        let manifest_digest = reg
            .push_manifest(repo, &self.tag, mt, &manifest_bytes)
            .await?;
        Ok(Pushed {
            host: reg.host.clone(),
            repo: self.repo,
            tag: self.tag,
            manifest_digest,
            manifest: manifest_bytes,
            config_digest,
            layer_digests,
            diff_ids,
        })
    }
}

/// Pushes an OCI index over already pushed per-platform manifests.
pub async fn push_index(
    reg: &TestRegistry,
    repo: &str,
    tag: &str,
    entries: &[(&Pushed, &str)],
) -> Result<String> {
    let manifests: Vec<serde_json::Value> = entries
        .iter()
        .map(|(p, arch)| {
            let mut platform = json!({"architecture": arch, "os": "linux"});
            if *arch == "arm64" {
                platform["variant"] = json!("v8");
            }
            json!({"mediaType": OCI_MANIFEST, "digest": p.manifest_digest, "size": p.manifest.len(), "platform": platform})
        })
        .collect();
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    let bytes = serde_json::to_vec(&index)?;
    reg.push_manifest(repo, tag, OCI_INDEX, &bytes).await
}

/// The node's architecture in OCI terms.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}
