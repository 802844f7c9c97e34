//! The error vocabulary of the CRI server, mapped to gRPC statuses in one place
//! (containerd's errdefs idea): handlers return [`CriError`], the edge converts.

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
    /// A limit is reached; retrying later may succeed.
    #[error("{0}")]
    ResourceExhausted(String),
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

impl From<crius_streaming::StreamError> for CriError {
    fn from(e: crius_streaming::StreamError) -> Self {
        use crius_streaming::StreamError;
        match e {
            StreamError::TooManyPending { .. } => CriError::ResourceExhausted(e.to_string()),
            e => {
                // The message with its sources: CriError keeps text only.
                let mut msg = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    msg = format!("{msg}: {s}");
                    source = s.source();
                }
                CriError::Internal(msg)
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
            CriError::ResourceExhausted(_) => Code::ResourceExhausted,
            CriError::Internal(_) => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}

/// The result type of CRI handlers.
pub type CriResult<T> = Result<T, CriError>;
