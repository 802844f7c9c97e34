//! Image references (crates/images `Reference::parse`): whatever the kubelet names,
//! parsing never panics, and an accepted reference prints to a form that parses
//! back to itself (so do its tagged and digested forms).

use crius_fuzz::{Harness, Target};

use super::{PARSE_BOUND, shape, tag};

pub const TARGET: Target = Target {
    name: "reference",
    make: || Box::new(References),
    dictionary: &[
        b"docker.io/",
        b"index.docker.io/",
        b"registry-1.docker.io/",
        b"library/",
        b"localhost/",
        b"localhost:5000/",
        b"127.0.0.1:5000/",
        b"[::1]:5000/",
        b"[fd00::1]/",
        b"registry.k8s.io/",
        b":latest",
        b"@sha256:",
        b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        b"/",
        b":",
        b"@",
        b".",
        b"__",
        b"--",
        b"A",
        b" ",
        b"\t",
        b"\0",
        b"\xc2\x85",
        b"\xc2\xa0",
    ],
    max_len: 640,
    time_bound: PARSE_BOUND,
    ci_iterations: 3000,
};

struct References;

impl Harness for References {
    fn run(&mut self, input: &[u8]) -> u64 {
        let text = String::from_utf8_lossy(input);
        match crius_images::fuzzing::reference(&text) {
            Ok(s) => tag(&["ok", &s]),
            Err(reason) => shape(&reason),
        }
    }
}

/// Seed references: what the kubelet and crictl send.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let d = "sha256:9ae97d36d26566ff84e8893c64a6dc4fe8ca6d1144bf5b87b2b85a32def253c7";
    [
        ("familiar", "busybox".to_string()),
        ("familiar-tag", "busybox:1.36".to_string()),
        ("user-repo", "bitnami/redis:7.2".to_string()),
        ("k8s-pause", "registry.k8s.io/pause:3.9".to_string()),
        ("digest", format!("docker.io/library/nginx@{d}")),
        ("tag-and-digest", format!("nginx:1.25@{d}")),
        (
            "local-port",
            "127.0.0.1:5000/crius/e2e/busybox:v1".to_string(),
        ),
        ("ipv6", "[::1]:5000/app".to_string()),
        ("localhost", "localhost/app:dev".to_string()),
        (
            "index-docker",
            "index.docker.io/library/alpine:3".to_string(),
        ),
        (
            "deep",
            "quay.io/org/team/project/image:2024.01-rc_1".to_string(),
        ),
    ]
    .into_iter()
    .map(|(n, s)| (n, s.into_bytes()))
    .collect()
}
