//! Registry auth challenges and credentials. crates/images reaches registries
//! through oci-client, which reads a `WWW-Authenticate` header with the
//! `http-auth` challenge parser; crius's own parser of registry auth is the
//! docker-style `auth` field (base64 of `user:password`) the kubelet sends. Input:
//! the header value, a newline, then the `auth` field.
//!
//! Invariants: the parser never panics on a header a client can receive (visible
//! ASCII and tabs); every challenge it yields prints back (scheme, then each
//! parameter quoted with `\` escapes) to a header that parses to the same challenge;
//! the `auth` decoder never panics and decodes the standard base64 of any
//! `user:password` back to it, and never hands request credentials to a mirror.

use crius_fuzz::{Harness, Target};
use http_auth::{ChallengeParser, ChallengeRef};

use super::{PARSE_BOUND, shape, tag};

pub const TARGET: Target = Target {
    name: "challenge",
    make: || Box::new(Challenges),
    dictionary: &[
        b"Bearer ",
        b"Basic ",
        b"Digest ",
        b"realm=",
        b"service=",
        b"scope=",
        b"error=",
        b"\"https://auth.docker.io/token\"",
        b"\"registry.docker.io\"",
        b"\"repository:library/busybox:pull\"",
        b"\\\"",
        b"\\",
        b"\"",
        b", ",
        b",,",
        b"=",
        b"==",
        b"\t",
        b"dXNlcjpwYXNz",
        b"\n",
    ],
    max_len: 2048,
    time_bound: PARSE_BOUND,
    ci_iterations: 3000,
};

struct Challenges;

/// The challenge as data: scheme and unescaped parameters.
fn owned(c: &ChallengeRef<'_>) -> (String, Vec<(String, String)>) {
    (
        c.scheme.to_ascii_lowercase(),
        c.params
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_unescaped()))
            .collect(),
    )
}

/// Prints a challenge as a header value: `scheme k="v", ...`.
fn print(c: &ChallengeRef<'_>) -> String {
    let params: Vec<String> = c
        .params
        .iter()
        .map(|(k, v)| {
            let value = v.to_unescaped();
            let mut quoted = String::from("\"");
            for ch in value.chars() {
                if ch == '"' || ch == '\\' {
                    quoted.push('\\');
                }
                quoted.push(ch);
            }
            quoted.push('"');
            format!("{k}={quoted}")
        })
        .collect();
    if params.is_empty() {
        c.scheme.to_string()
    } else {
        format!("{} {}", c.scheme, params.join(", "))
    }
}

fn header(value: &str) -> u64 {
    let mut found = 0usize;
    let mut bearer = false;
    for item in ChallengeParser::new(value) {
        let Ok(c) = item else {
            return tag(&["refused", &found.min(3).to_string()]);
        };
        found += 1;
        assert!(
            !c.scheme.is_empty(),
            "{value:?}: a challenge without a scheme"
        );
        for (k, v) in &c.params {
            assert!(!k.is_empty(), "{value:?}: a parameter without a name");
            assert_eq!(v.unescaped_len(), v.to_unescaped().len(), "{value:?}: {k}");
        }
        bearer |= c.scheme.eq_ignore_ascii_case("bearer")
            && c.params
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("realm"));
        let printed = print(&c);
        let again: Vec<_> = ChallengeParser::new(&printed).collect();
        match again.as_slice() {
            [Ok(a)] => assert_eq!(
                owned(a),
                owned(&c),
                "{value:?}: challenge printed as {printed:?} parses differently"
            ),
            other => panic!("{value:?}: challenge printed as {printed:?} gives {other:?}"),
        }
    }
    tag(&["parsed", &found.min(3).to_string(), &bearer.to_string()])
}

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn auth(field: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(field);
    let sig = match crius_images::fuzzing::docker_auth(&text) {
        Ok(_) => tag(&["auth ok"]),
        Err(e) => shape(&e),
    };
    // The same bytes as a user and password, encoded as docker does.
    let (user, password) = match text.split_once(':') {
        Some((u, p)) => (u.replace(':', ""), p.to_string()),
        None => (text.replace(':', ""), String::new()),
    };
    let encoded = base64(format!("{user}:{password}").as_bytes());
    match crius_images::fuzzing::docker_auth(&encoded) {
        Ok((u, p)) => assert_eq!(
            (u.as_str(), p.as_str()),
            (user.as_str(), password.as_str()),
            "{encoded:?} decodes wrongly"
        ),
        Err(e) => panic!("{user:?}:{password:?} encoded as {encoded:?} is refused: {e}"),
    }
    sig
}

impl Harness for Challenges {
    fn run(&mut self, input: &[u8]) -> u64 {
        let (value, field) = match input.iter().position(|&b| b == b'\n') {
            Some(i) => (&input[..i], &input[i + 1..]),
            None => (input, &[][..]),
        };
        // What reaches the parser: a header value `to_str` accepts.
        let visible: Vec<u8> = value
            .iter()
            .copied()
            .filter(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
            .collect();
        let value = String::from_utf8_lossy(&visible);
        let h = header(&value);
        h ^ auth(field).rotate_left(1)
    }
}

/// Seeds: challenges as Docker Hub, GHCR, Harbor and the distribution registry send
/// them, each with a docker `auth` field.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    [
        (
            "docker-hub",
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
            "dXNlcjpwYXNzd29yZA==",
        ),
        (
            "ghcr",
            r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:user/image:pull""#,
            "Z2l0aHViOmdocF94eHg=",
        ),
        (
            "basic",
            r#"Basic realm="Registry Realm""#,
            "YWRtaW46SGFyYm9yMTIzNDU=",
        ),
        (
            "error-insufficient-scope",
            r#"Bearer realm="https://harbor.example/service/token",service="harbor-registry",scope="repository:proj/app:pull,push",error="insufficient_scope""#,
            "cm9ib3QkY2k6czNjcjN0",
        ),
        (
            "two-challenges",
            r#"Basic realm="registry", Bearer realm="https://r.example/token", service="r.example""#,
            "dTp",
        ),
        ("escaped", r#"Bearer realm="a\"b\\c", service=token68value"#, "Og=="),
    ]
    .into_iter()
    .map(|(n, h, a)| (n, format!("{h}\n{a}").into_bytes()))
    .collect()
}
