//! Image references, normalised as the kubelet and crictl expect (the docker
//! "familiar" rules): `busybox` is `docker.io/library/busybox:latest`, a first
//! component with a `.` or `:` or equal to `localhost` is a registry host, a tag
//! defaults to `latest` unless a digest is given.
//!
//! A reference is refused before anything is sent to a registry when it is empty,
//! holds white space or a control character (NUL included), or when its name (host
//! and repository, after normalisation) is over [`MAX_NAME_LEN`] characters.

use std::fmt;

use crate::error::ImageError;

/// The registry a reference with no host means.
pub(crate) const DEFAULT_REGISTRY: &str = "docker.io";

/// The longest name (`host[:port]/repository`) accepted: the limit the distribution
/// spec notes registries and clients place on it.
pub(crate) const MAX_NAME_LEN: usize = 255;

/// No valid reference is longer: a longest name, `:`, a longest tag, `@`, a sha256
/// digest. Longer input is refused before it is parsed.
const MAX_REFERENCE_LEN: usize = MAX_NAME_LEN + 1 + 128 + 1 + 71;

/// A fully qualified image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Reference {
    /// Registry host, with port if any (`docker.io`, `127.0.0.1:5000`).
    pub(crate) registry: String,
    /// Repository path (`library/busybox`).
    pub(crate) repository: String,
    /// Tag, when the reference has one (or no digest).
    pub(crate) tag: Option<String>,
    /// `sha256:...` digest, when given.
    pub(crate) digest: Option<String>,
}

fn err(reference: &str, reason: impl Into<String>) -> ImageError {
    // A reference too long to be valid is quoted by its start only.
    let shown: String = reference.chars().take(MAX_REFERENCE_LEN).collect();
    ImageError::InvalidReference {
        reference: if shown.len() < reference.len() {
            format!("{shown}...")
        } else {
            shown
        },
        reason: reason.into(),
    }
}

fn valid_component(c: &str) -> bool {
    // lowercase alphanumerics separated by '.', '_', '__' or runs of '-'
    !c.is_empty()
        && c.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_' || b == b'-'
        })
        && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && c.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn is_host(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost" || first.starts_with('[')
}

impl Reference {
    /// Parses and normalises a reference as the kubelet sends it.
    pub(crate) fn parse(input: &str) -> Result<Reference, ImageError> {
        let s = input;
        if s.is_empty() {
            return Err(err(input, "is empty"));
        }
        if let Some(c) = s.chars().find(|c| c.is_control()) {
            return Err(err(input, format!("contains the control character {c:?}")));
        }
        if s.contains(char::is_whitespace) {
            return Err(err(input, "contains white space"));
        }
        if s.len() > MAX_REFERENCE_LEN {
            return Err(err(
                input,
                format!(
                    "is {} bytes long; no valid reference is longer than {MAX_REFERENCE_LEN} (a name holds at most {MAX_NAME_LEN} characters)",
                    s.len()
                ),
            ));
        }
        let (name, digest) = match s.split_once('@') {
            Some((n, d)) => {
                if !valid_digest(d) {
                    return Err(err(input, format!("{d:?} is not a sha256 digest")));
                }
                (n, Some(d.to_string()))
            }
            None => (s, None),
        };
        // A tag is after the last ':' that follows the last '/'.
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(i) => {
                let t = &name[last_slash + i + 1..];
                if !valid_tag(t) {
                    return Err(err(input, format!("{t:?} is not a valid tag")));
                }
                (&name[..last_slash + i], Some(t.to_string()))
            }
            None => (name, None),
        };
        let (registry, path) = match name.split_once('/') {
            Some((first, rest)) if is_host(first) => (first.to_string(), rest.to_string()),
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        let registry = if registry == "index.docker.io" || registry == "registry-1.docker.io" {
            DEFAULT_REGISTRY.to_string()
        } else {
            registry
        };
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if repository.is_empty() || !repository.split('/').all(valid_component) {
            return Err(err(
                input,
                format!(
                    "{repository:?} is not a valid repository name (lowercase letters, digits, separators)"
                ),
            ));
        }
        let name_len = registry.len() + 1 + repository.len();
        if name_len > MAX_NAME_LEN {
            return Err(err(
                input,
                format!(
                    "the name {registry}/{repository} is {name_len} characters long; at most {MAX_NAME_LEN} are allowed (host and repository together)"
                ),
            ));
        }
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_string()),
            _ => tag,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`, the name repo tags and digests are built on.
    pub(crate) fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The tagged form (`docker.io/library/busybox:latest`), if the reference has a tag.
    pub(crate) fn tagged(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name()))
    }

    /// `name@digest` for a given manifest digest.
    pub(crate) fn with_digest(&self, digest: &str) -> String {
        format!("{}@{digest}", self.name())
    }
}

/// `localhost`, 127.0.0.0/8 or `[::1]`, with or without a port.
pub(crate) fn is_loopback_host(host_port: &str) -> bool {
    let host = if let Some(rest) = host_port.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn familiar_names_are_normalised() {
        for (input, want) in [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
            (
                "index.docker.io/library/busybox:1",
                "docker.io/library/busybox:1",
            ),
            ("user/app:v1", "docker.io/user/app:v1"),
            ("registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.9"),
            ("localhost/app", "localhost/app:latest"),
            ("127.0.0.1:5000/a/b/c:t", "127.0.0.1:5000/a/b/c:t"),
            ("[::1]:5000/app", "[::1]:5000/app:latest"),
        ] {
            assert_eq!(
                Reference::parse(input).unwrap().to_string(),
                want,
                "{input}"
            );
        }
    }

    #[test]
    fn digests() {
        let r = Reference::parse(&format!("busybox@{D}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(D));
        let r = Reference::parse(&format!("127.0.0.1:5000/app:v1@{D}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.with_digest(D), format!("127.0.0.1:5000/app@{D}"));
    }

    #[test]
    fn bad_references_are_refused() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox@sha256:abc",
            "busybox@md5:0123",
            "a b",
            "reg.io/",
            "reg.io//x",
            "-x",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    fn refusal(input: &str) -> String {
        match Reference::parse(input) {
            Err(ImageError::InvalidReference { reason, .. }) => reason,
            other => panic!("{input:?}: expected InvalidReference, got {other:?}"),
        }
    }

    #[test]
    fn control_characters_and_white_space_are_refused() {
        for bad in [
            "busybox\0",
            "bus\0ybox:latest",
            "busybox\n",
            "busybox\t:1",
            "\u{7f}busybox",
            "busybox\u{85}",
            " busybox",
            "busybox ",
            "busy box",
            "busybox:\u{a0}1",
        ] {
            let reason = refusal(bad);
            assert!(
                reason.contains("control character") || reason.contains("white space"),
                "{bad:?}: {reason}"
            );
        }
        // The message shows the character escaped, not raw.
        let e = Reference::parse("a\0b").unwrap_err().to_string();
        assert!(e.contains("\\0"), "{e}");
        assert!(!e.contains('\0'), "{e}");
    }

    #[test]
    fn names_over_255_characters_are_refused() {
        // docker.io/library/ is 18 characters: 237 more make 255, 238 one too many.
        let fits = "a".repeat(237);
        assert_eq!(
            Reference::parse(&fits).unwrap().name().len(),
            MAX_NAME_LEN,
            "a 255-character name is fine"
        );
        let reason = refusal(&"a".repeat(238));
        assert!(reason.contains("256 characters"), "{reason}");
        assert!(reason.contains("255"), "{reason}");
        let host = format!("registry.example.com:5000/{}", "x".repeat(230));
        assert!(refusal(&format!("{host}:v1")).contains("255"));
        // Far too long: refused before parsing, and not quoted whole.
        let huge = format!("{}:{}", "b".repeat(5000), "t".repeat(5000));
        match Reference::parse(&huge) {
            Err(ImageError::InvalidReference { reference, reason }) => {
                assert!(reference.len() < 1000, "quoted {} bytes", reference.len());
                assert!(reason.contains("10001 bytes"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // A long tag and digest do not count towards the name.
        let r = format!("reg.io/{}:{}@{D}", "n".repeat(200), "t".repeat(128));
        assert!(r.len() > 255);
        assert_eq!(Reference::parse(&r).unwrap().tag.unwrap().len(), 128);
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "docker.io",
            "10.0.0.1:5000",
            "[fd00::1]:5000",
            "localhost.example",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
