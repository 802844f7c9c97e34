//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`; not an API): the
//! crate's parsers of what registries and the kubelet send, each with the
//! invariants it promises checked by assertions. A panic here is a finding.

use crius_cri_api::v1::AuthConfig;
use oci_client::secrets::RegistryAuth;

use crate::ImagesConfig;
use crate::auth::auth_for;
use crate::error::ImageError;
use crate::layers::digest;
use crate::manifest::{self, ImageConfigFile, Parsed, Platform};
use crate::pull::{image_size, layer_records};
use crate::reference::{MAX_NAME_LEN, Reference};

/// Parses an image reference. An accepted one must print without white space or
/// control characters, keep its name within [`MAX_NAME_LEN`], and parse back from
/// its printed, tagged and digested forms to itself. Returns the shape of an
/// accepted reference, or the refusal's reason.
pub fn reference(input: &str) -> Result<String, String> {
    let r = match Reference::parse(input) {
        Ok(r) => r,
        Err(ImageError::InvalidReference { reference, reason }) => {
            assert!(
                reference.chars().count() <= 255 + 1 + 128 + 1 + 71 + 3,
                "the refusal quotes {} characters",
                reference.chars().count()
            );
            return Err(reason);
        }
        Err(other) => panic!("{input:?}: refused with {other:?}, not InvalidReference"),
    };
    let shown = r.to_string();
    assert!(
        !shown.contains(|c: char| c.is_whitespace() || c.is_control()),
        "{input:?} became {shown:?}"
    );
    assert!(
        r.name().len() <= MAX_NAME_LEN,
        "{input:?}: name {}",
        r.name()
    );
    assert!(
        r.tag.is_some() || r.digest.is_some(),
        "{input:?}: neither tag nor digest"
    );
    match Reference::parse(&shown) {
        Ok(again) => assert_eq!(
            again, r,
            "{input:?} printed as {shown:?} parses differently"
        ),
        Err(e) => panic!("{input:?} printed as {shown:?}, which is refused: {e}"),
    }
    if let Some(tagged) = r.tagged() {
        let t = Reference::parse(&tagged)
            .unwrap_or_else(|e| panic!("{input:?}: its tagged form {tagged:?} is refused: {e}"));
        assert_eq!(
            (&t.registry, &t.repository, &t.tag, &t.digest),
            (&r.registry, &r.repository, &r.tag, &None),
            "{input:?}: tagged form {tagged:?}"
        );
    }
    if let Some(d) = &r.digest {
        let by = r.with_digest(d);
        let t = Reference::parse(&by)
            .unwrap_or_else(|e| panic!("{input:?}: its digest form {by:?} is refused: {e}"));
        assert_eq!(t.digest.as_ref(), Some(d), "{input:?}: digest form {by:?}");
    }
    let host = if r.registry == "docker.io" {
        "docker"
    } else if r.registry.starts_with('[') {
        "ipv6"
    } else if r.registry.contains(':') {
        "port"
    } else {
        "host"
    };
    Ok(format!(
        "{host} depth {} tag {} digest {}",
        r.repository.split('/').count().min(4),
        r.tag.is_some(),
        r.digest.is_some()
    ))
}

fn platform(os: &str, arch: &str, variant: Option<&str>) -> Platform {
    Platform {
        architecture: arch.into(),
        os: os.into(),
        variant: variant.map(str::to_string),
    }
}

/// Reads a manifest or index as a pull does and, for a manifest, its image config:
/// the platform choice from an index, the config's run settings, the layer records
/// (diff ids to chain ids) and the image size. A chosen platform must be the one
/// asked for; a config must survive a serialise-parse round trip. Returns the shape
/// of what was read, or why it was refused.
pub fn manifest(
    document: &[u8],
    content_type: Option<&str>,
    config: Option<&[u8]>,
) -> Result<String, String> {
    let list = match manifest::parse(document, content_type)? {
        Parsed::Index(list) => list,
        Parsed::Manifest {
            config: desc,
            layers,
        } => {
            digest(&desc.digest, "config digest").map_err(|e| e.to_string())?;
            let Some(bytes) = config else {
                return Ok(format!("manifest of {} layers", layers.len().min(3)));
            };
            let cfg = ImageConfigFile::parse(bytes)?;
            let json = serde_json::to_vec(&cfg).map_err(|e| e.to_string())?;
            let again = ImageConfigFile::parse(&json)
                .unwrap_or_else(|e| panic!("a config does not parse back: {e}"));
            assert_eq!(again, cfg, "a config changes in a round trip");
            let (uid, name) = manifest::user_of(&cfg.run().user);
            assert!(uid.is_none() || name.is_empty(), "both a uid and a name");
            let records =
                layer_records(&layers, &cfg.rootfs.diff_ids).map_err(|e| e.to_string())?;
            assert_eq!(records.len(), layers.len());
            let size = image_size(&desc, &records);
            assert!(size >= desc.size, "the image is smaller than its config");
            return Ok(format!("image of {} layers", records.len().min(3)));
        }
    };
    assert!(!list.is_empty(), "an index with no manifests was accepted");
    for want in [
        manifest::host_platform(),
        platform("linux", "amd64", None),
        platform("linux", "arm64", Some("v8")),
        platform("linux", "arm", Some("v7")),
        platform("linux", "arm", None),
        platform("windows", "amd64", None),
    ] {
        let Some(d) = manifest::select(&list, &want) else {
            continue;
        };
        let p = d.platform.as_ref().unwrap_or_else(|| {
            panic!("chose {} which names no platform", d.digest);
        });
        assert_eq!((&p.os, &p.architecture), (&want.os, &want.architecture));
        if let (Some(a), Some(b)) = (&p.variant, &want.variant) {
            assert_eq!(a, b, "chose variant {a} for {b}");
        }
        let exact = list
            .iter()
            .any(|x| x.platform.as_ref().is_some_and(|q| *q == want));
        if exact {
            assert!(
                p.variant == want.variant || p.variant.is_none(),
                "an exact match exists, yet {p:?} was chosen for {want:?}"
            );
        }
    }
    Ok(format!("index of {} manifests", list.len().min(3)))
}

/// Decodes a docker-style `auth` field (base64 of `user:password`) as a pull does.
/// The credentials go to the image's own registry, never to a mirror. Returns the
/// user and password, or the refusal.
pub fn docker_auth(auth: &str) -> Result<(String, String), String> {
    let cfg = ImagesConfig::default();
    let given = AuthConfig {
        auth: auth.to_string(),
        ..Default::default()
    };
    let mirror = auth_for(&cfg, "mirror.example", "registry.example", Some(&given));
    assert!(
        matches!(mirror, Ok(RegistryAuth::Anonymous)),
        "a mirror got {mirror:?}"
    );
    match auth_for(&cfg, "registry.example", "registry.example", Some(&given)) {
        Ok(RegistryAuth::Basic(u, p)) => Ok((u, p)),
        Ok(RegistryAuth::Anonymous) if auth.is_empty() => Err("empty".into()),
        Ok(other) => panic!("{auth:?} gave {other:?}"),
        Err(e) => Err(e.to_string()),
    }
}
