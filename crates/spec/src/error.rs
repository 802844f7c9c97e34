//! The errors of spec generation, by what the caller can do about them.
//!
//! [`SpecError::InvalidField`] and [`SpecError::Unsupported`] name the CRI field at
//! fault by its path in the request (`config.…` for the container's config,
//! `sandbox_config.…` for the pod's); their `Display` is `"<field>: <message>"`. The
//! other variants are failures of the node, with the underlying error as `source`.

use oci_spec::OciSpecError;

/// A refused or failed spec generation.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// A request field holds a value that cannot work: the caller must change it.
    #[error("{field}: {message}")]
    InvalidField { field: String, message: String },
    /// The request asks for something crius does not do, or that the pod does not
    /// allow (image volumes, id-mapped mounts, user namespaces, a POD PID namespace the
    /// pod does not have, a privileged container in an unprivileged pod, …).
    #[error("{field}: {message}")]
    Unsupported { field: String, message: String },
    /// Reading something the spec is made from failed (the rootfs's /etc/passwd, the
    /// host's /dev, …).
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// oci-spec refused to build a part of the spec.
    #[error("{context}")]
    Build {
        context: String,
        #[source]
        source: OciSpecError,
    },
    /// A container's config.json (written by crius) does not hold what it should.
    #[error("{context}")]
    Corrupt {
        context: String,
        #[source]
        source: Option<serde_json::Error>,
    },
}

impl SpecError {
    /// The field this error names, for [`SpecError::InvalidField`] and
    /// [`SpecError::Unsupported`].
    pub fn field(&self) -> Option<&str> {
        match self {
            SpecError::InvalidField { field, .. } | SpecError::Unsupported { field, .. } => {
                Some(field)
            }
            _ => None,
        }
    }
}

/// An invalid field.
pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError::InvalidField {
        field: field.into(),
        message: message.into(),
    }
}

/// An unsupported request.
pub(crate) fn unsupported(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError::Unsupported {
        field: field.into(),
        message: message.into(),
    }
}

/// An I/O failure while doing `context`.
pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> SpecError {
    let context = context.into();
    move |source| SpecError::Io { context, source }
}

/// A refusal of oci-spec's builder of `what`.
pub(crate) fn build(what: &'static str) -> impl FnOnce(OciSpecError) -> SpecError {
    move |source| SpecError::Build {
        context: format!("building the spec's {what}"),
        source,
    }
}

pub(crate) type Result<T> = std::result::Result<T, SpecError>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn display_names_the_field_and_keeps_the_cause() {
        let e = invalid("config.x", "bad");
        assert_eq!(e.to_string(), "config.x: bad");
        assert_eq!(e.field(), Some("config.x"));
        let e = unsupported("config.y", "not yet");
        assert_eq!(e.to_string(), "config.y: not yet");
        let e = io("reading x")(std::io::Error::other("boom"));
        assert_eq!(e.to_string(), "reading x");
        assert_eq!(e.source().map(|s| s.to_string()).as_deref(), Some("boom"));
        assert_eq!(e.field(), None);
        let e = build("process")(OciSpecError::Other("no".into()));
        assert_eq!(e.to_string(), "building the spec's process");
        assert!(e.source().is_some());
    }
}
