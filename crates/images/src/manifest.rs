//! The registry documents crius reads: image manifests (Docker schema 2 and OCI),
//! manifest lists / OCI indexes, and image configs. Only the fields crius uses are
//! modelled; unknown fields are ignored, as the specs require.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Every manifest media type crius accepts, for the Accept header.
pub(crate) const ACCEPTED: [&str; 4] = [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
}

/// A platform in an index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// A manifest or an index: which one is decided by media type and content.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Document {
    #[serde(default)]
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    pub manifests: Option<Vec<Descriptor>>,
}

/// What a fetched manifest turned out to be.
#[derive(Debug, Clone)]
pub(crate) enum Parsed {
    Index(Vec<Descriptor>),
    Manifest {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
}

/// Parses a manifest or index. `content_type` is the registry's header, if any.
pub(crate) fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Parsed, String> {
    let doc: Document =
        serde_json::from_slice(bytes).map_err(|e| format!("manifest is not valid JSON: {e}"))?;
    if doc.schema_version != 2 {
        return Err(format!(
            "manifest schema version {} is not supported (Docker schema 1 images are deprecated; only schema 2 and OCI are)",
            doc.schema_version
        ));
    }
    let mt = doc
        .media_type
        .clone()
        .or_else(|| content_type.map(str::to_string))
        .unwrap_or_default();
    let is_index =
        mt == OCI_INDEX || mt == DOCKER_LIST || (doc.manifests.is_some() && doc.config.is_none());
    if is_index {
        let manifests = doc.manifests.unwrap_or_default();
        if manifests.is_empty() {
            return Err("the image index lists no manifests".to_string());
        }
        return Ok(Parsed::Index(manifests));
    }
    let config = doc
        .config
        .ok_or_else(|| "the manifest has no config descriptor".to_string())?;
    let layers = doc.layers.unwrap_or_default();
    Ok(Parsed::Manifest { config, layers })
}

/// The platform this node runs, in OCI terms.
pub(crate) fn host_platform() -> Platform {
    let (architecture, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", Some("v8")),
        "arm" => ("arm", Some("v7")),
        "x86" => ("386", None),
        "powerpc64" => ("ppc64le", None),
        "s390x" => ("s390x", None),
        "riscv64" => ("riscv64", None),
        other => (other, None),
    };
    Platform {
        architecture: architecture.to_string(),
        os: "linux".to_string(),
        variant: variant.map(str::to_string),
    }
}

/// Chooses the manifest for `want` from an index: same os and architecture, and the
/// same variant when both name one (arm64's `v8` is also matched by no variant).
pub(crate) fn select<'a>(manifests: &'a [Descriptor], want: &Platform) -> Option<&'a Descriptor> {
    let matches = |d: &&Descriptor, strict_variant: bool| {
        let Some(p) = &d.platform else { return false };
        if p.os != want.os || p.architecture != want.architecture {
            return false;
        }
        match (&p.variant, &want.variant) {
            (Some(a), Some(b)) => a == b,
            (None, _) => !strict_variant || want.variant.is_none() || want.architecture == "arm64",
            (Some(_), None) => !strict_variant,
        }
    };
    manifests
        .iter()
        .find(|d| matches(d, true))
        .or_else(|| manifests.iter().find(|d| matches(d, false)))
}

/// The parts of an image config crius uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ImageConfigFile {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: Option<RunConfig>,
    pub rootfs: RootFs,
}

/// The `rootfs` of an image config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// The run configuration of an image (Docker's names).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RunConfig {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stop_signal: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<HashMap<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<HashMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<HashMap<String, serde_json::Value>>,
}

impl ImageConfigFile {
    /// Parses a config blob.
    pub(crate) fn parse(bytes: &[u8]) -> Result<ImageConfigFile, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("image config is not valid: {e}"))
    }

    /// The run config, or an empty one.
    pub(crate) fn run(&self) -> RunConfig {
        self.config.clone().unwrap_or_default()
    }
}

/// The user an image's `USER` names: (uid, username), at most one of them set,
/// as ImageStatus reports it. `1000`, `1000:1000` give a uid; `app`, `app:grp` a name.
pub(crate) fn user_of(user: &str) -> (Option<i64>, String) {
    let name = user.split(':').next().unwrap_or_default();
    if name.is_empty() {
        return (None, String::new());
    }
    match name.parse::<i64>() {
        Ok(uid) => (Some(uid), String::new()),
        Err(_) => (None, name.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(arch: &str, variant: Option<&str>) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: format!("sha256:{arch}{}", variant.unwrap_or("")),
            size: 1,
            platform: Some(Platform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: variant.map(str::to_string),
            }),
            urls: vec![],
        }
    }

    #[test]
    fn selects_the_node_platform() {
        let list = vec![
            desc("arm64", Some("v8")),
            desc("amd64", None),
            desc("arm", Some("v7")),
        ];
        let amd64 = Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
            variant: None,
        };
        assert_eq!(select(&list, &amd64).unwrap().digest, "sha256:amd64");
        let arm64 = Platform {
            architecture: "arm64".into(),
            os: "linux".into(),
            variant: Some("v8".into()),
        };
        assert_eq!(select(&list, &arm64).unwrap().digest, "sha256:arm64v8");
        let list2 = vec![desc("arm64", None)];
        assert_eq!(select(&list2, &arm64).unwrap().digest, "sha256:arm64");
        let s390 = Platform {
            architecture: "s390x".into(),
            os: "linux".into(),
            variant: None,
        };
        assert!(select(&list, &s390).is_none());
    }

    #[test]
    fn parses_manifests_and_indexes() {
        let m = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:c","size":3},
            "layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"sha256:l","size":5}]}"#;
        match parse(m, None).unwrap() {
            Parsed::Manifest { config, layers } => {
                assert_eq!(config.digest, "sha256:c");
                assert_eq!(layers.len(), 1);
            }
            other => panic!("{other:?}"),
        }
        let i = br#"{"schemaVersion":2,"manifests":[{"mediaType":"x","digest":"sha256:a","size":1,"platform":{"architecture":"amd64","os":"linux"}}]}"#;
        assert!(matches!(parse(i, Some(OCI_INDEX)).unwrap(), Parsed::Index(v) if v.len() == 1));
        assert!(
            parse(br#"{"schemaVersion":1}"#, None)
                .unwrap_err()
                .contains("schema")
        );
        assert!(parse(b"nope", None).is_err());
    }

    #[test]
    fn image_users() {
        assert_eq!(user_of("1000:1000"), (Some(1000), String::new()));
        assert_eq!(user_of("app"), (None, "app".to_string()));
        assert_eq!(user_of("app:staff"), (None, "app".to_string()));
        assert_eq!(user_of(""), (None, String::new()));
    }
}
