//! The error vocabulary of the CRI server, mapped to gRPC statuses in one place
//! (containerd's errdefs idea): handlers return [`CriError`], the edge converts.

use crius_spec::SpecError;
use tonic::{Code, Status};

use crate::store::StoreError;

/// A failed CRI call, by what the caller can do about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CriError {
    /// The request is malformed; the message names the field.
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl CriError {
    /// An invalid field: `field` is the request path, e.g. `config.metadata.name`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> CriError {
        CriError::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    /// An internal failure with context.
    pub fn internal(context: impl std::fmt::Display, err: impl std::fmt::Display) -> CriError {
        CriError::Internal(format!("{context}: {err}"))
    }
}

impl From<StoreError> for CriError {
    fn from(e: StoreError) -> Self {
        CriError::Internal(e.to_string())
    }
}

/// Spec generation's refusals keep their field; the node's failures become Internal
/// with their whole cause chain.
impl From<SpecError> for CriError {
    fn from(e: SpecError) -> Self {
        match e {
            SpecError::InvalidField { field, message } => {
                CriError::InvalidArgument { field, message }
            }
            SpecError::Unsupported { .. } => CriError::FailedPrecondition(e.to_string()),
            SpecError::Io { .. } | SpecError::Build { .. } | SpecError::Corrupt { .. } => {
                let mut message = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    message.push_str(": ");
                    message.push_str(&c.to_string());
                    cause = c.source();
                }
                CriError::Internal(message)
            }
        }
    }
}

impl From<CriError> for Status {
    fn from(e: CriError) -> Status {
        let code = match &e {
            CriError::InvalidArgument { .. } => Code::InvalidArgument,
            CriError::NotFound(_) => Code::NotFound,
            CriError::AlreadyExists(_) => Code::AlreadyExists,
            CriError::FailedPrecondition(_) => Code::FailedPrecondition,
            CriError::Unavailable(_) => Code::Unavailable,
            CriError::Internal(_) => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}

/// The result type of CRI handlers.
pub type CriResult<T> = Result<T, CriError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_errors_map_by_what_the_caller_can_do() {
        let e = CriError::from(SpecError::InvalidField {
            field: "config.x".into(),
            message: "bad".into(),
        });
        assert!(matches!(&e, CriError::InvalidArgument { field, .. } if field == "config.x"));
        assert_eq!(Status::from(e).code(), Code::InvalidArgument);
        let e = CriError::from(SpecError::Unsupported {
            field: "config.y".into(),
            message: "not yet".into(),
        });
        assert_eq!(e.to_string(), "config.y: not yet");
        assert_eq!(Status::from(e).code(), Code::FailedPrecondition);
        let e = CriError::from(SpecError::Io {
            context: "reading etc/passwd in the rootfs".into(),
            source: std::io::Error::other("boom"),
        });
        assert_eq!(e.to_string(), "reading etc/passwd in the rootfs: boom");
        assert_eq!(Status::from(e).code(), Code::Internal);
        let e = CriError::from(SpecError::Corrupt {
            context: "the container's config.json has no process".into(),
            source: None,
        });
        assert_eq!(e.to_string(), "the container's config.json has no process");
    }
}
