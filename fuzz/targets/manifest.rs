//! Manifests, indexes and image configs (crates/images): what a registry serves is
//! read as a pull reads it (schema and media type, the platform choice from an
//! index, the config's run settings, diff ids to chain ids, the image size) without
//! a panic; a chosen platform is the one asked for and a config survives a round
//! trip. Input: the manifest or index, then optionally a 0xff byte and the config.

use crius_fuzz::{Harness, Target};

use super::{PARSE_BOUND, shape, tag};

pub const TARGET: Target = Target {
    name: "manifest",
    make: || Box::new(Manifests),
    dictionary: &[
        b"\"schemaVersion\":2",
        b"\"mediaType\"",
        b"\"application/vnd.oci.image.index.v1+json\"",
        b"\"application/vnd.oci.image.manifest.v1+json\"",
        b"\"application/vnd.docker.distribution.manifest.v2+json\"",
        b"\"application/vnd.docker.distribution.manifest.list.v2+json\"",
        b"\"application/vnd.oci.image.layer.v1.tar+gzip\"",
        b"\"config\"",
        b"\"layers\"",
        b"\"manifests\"",
        b"\"platform\"",
        b"\"architecture\":\"amd64\"",
        b"\"architecture\":\"arm64\"",
        b"\"os\":\"linux\"",
        b"\"variant\":\"v8\"",
        b"\"digest\"",
        b"\"sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae\"",
        b"\"size\"",
        b"18446744073709551615",
        b"9223372036854775807",
        b"\"rootfs\"",
        b"\"diff_ids\"",
        b"\"User\"",
        b"\"Env\"",
        b"\"Cmd\"",
        b"\"Volumes\"",
        b"\"ExposedPorts\"",
        b"\xff",
        b"null",
        b"[]",
        b"{}",
    ],
    max_len: 16384,
    time_bound: PARSE_BOUND,
    ci_iterations: 1500,
};

struct Manifests;

impl Harness for Manifests {
    fn run(&mut self, input: &[u8]) -> u64 {
        let (doc, config) = match input.iter().position(|&b| b == 0xff) {
            Some(i) => (&input[..i], Some(&input[i + 1..])),
            None => (input, None),
        };
        match crius_images::fuzzing::manifest(doc, None, config) {
            Ok(s) => tag(&["ok", &s]),
            Err(reason) => shape(&reason),
        }
    }
}

const D1: &str = "sha256:3f57d9401f8d42f986df300f0c69192fc41da28ccc8d797829467780db3dd741";
const D2: &str = "sha256:ec562eabd705d25bfea8c8d79e4610775e375524af00552fe871d3338261563c";
const D3: &str = "sha256:a416a98b71e224a31ee99cff8e16063554498227d2b696152a9c3e0aa65e5824";
const D4: &str = "sha256:6f7aaa1bcd10def0c4b1cc13e0c0f3a0ea1a99b96c6e4f5ad0a12f8b6ec79a3b";

/// Seeds: a multi-platform index as buildx pushes it (with an attestation
/// manifest), a Docker schema 2 manifest with its config, an OCI one.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let index = format!(
        r#"{{
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.index.v1+json",
  "manifests": [
    {{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "{D1}", "size": 610,
      "platform": {{"architecture": "amd64", "os": "linux"}}}},
    {{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "{D2}", "size": 610,
      "platform": {{"architecture": "arm64", "os": "linux", "variant": "v8"}}}},
    {{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "{D3}", "size": 610,
      "platform": {{"architecture": "arm", "os": "linux", "variant": "v7"}}}},
    {{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "{D4}", "size": 839,
      "annotations": {{"vnd.docker.reference.digest": "{D1}", "vnd.docker.reference.type": "attestation-manifest"}},
      "platform": {{"architecture": "unknown", "os": "unknown"}}}}
  ]
}}"#
    );
    let docker_list = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[{{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":527,"digest":"{D2}","platform":{{"architecture":"amd64","os":"linux"}}}},{{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":527,"digest":"{D3}","platform":{{"architecture":"s390x","os":"linux"}}}},{{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":1125,"digest":"{D4}","platform":{{"architecture":"amd64","os":"windows","os.version":"10.0.17763.5206"}}}}]}}"#
    );
    let docker_manifest = format!(
        r#"{{
   "schemaVersion": 2,
   "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
   "config": {{"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1457, "digest": "{D1}"}},
   "layers": [
      {{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 2152262, "digest": "{D2}"}},
      {{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 93, "digest": "{D3}"}}
   ]
}}"#
    );
    let config = format!(
        r#"{{"architecture":"amd64","config":{{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"],"User":"1000:1000","WorkingDir":"/srv","StopSignal":"SIGQUIT","ExposedPorts":{{"8080/tcp":{{}}}},"Volumes":{{"/data":{{}}}},"Labels":{{"org.opencontainers.image.source":"https://example.invalid/app"}}}},"created":"2024-01-25T17:45:24.389562337Z","history":[{{"created":"2024-01-25T17:45:24Z","created_by":"/bin/sh -c #(nop) ADD file:82a0ea4a in / "}}],"os":"linux","rootfs":{{"type":"layers","diff_ids":["{D3}","{D4}"]}}}}"#
    );
    let oci_manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D4}","size":581}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","digest":"{D1}","size":3408729}}],"annotations":{{"org.opencontainers.image.created":"2024-02-01T00:00:00Z"}}}}"#
    );
    let oci_config = format!(
        r#"{{"architecture":"arm64","variant":"v8","os":"linux","config":{{"User":"app","Entrypoint":["/app"]}},"rootfs":{{"type":"layers","diff_ids":["{D2}"]}}}}"#
    );
    let mut with_config = docker_manifest.clone().into_bytes();
    with_config.push(0xff);
    with_config.extend_from_slice(config.as_bytes());
    let mut oci = oci_manifest.into_bytes();
    oci.push(0xff);
    oci.extend_from_slice(oci_config.as_bytes());
    vec![
        ("oci-index", index.into_bytes()),
        ("docker-list", docker_list.into_bytes()),
        ("docker-manifest", docker_manifest.into_bytes()),
        ("docker-manifest-and-config", with_config),
        ("oci-manifest-and-config", oci),
    ]
}
