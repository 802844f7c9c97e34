//! The error vocabulary of the CRI server, mapped to gRPC statuses in one place
//! (containerd's errdefs idea): handlers return [`CriError`], the edge converts.

use tonic::{Code, Status};

use crius_images::ImageError;
use crius_store::StoreError;

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
    /// Out of something finite: disk space, a configured size limit.
    #[error("{0}")]
    ResourceExhausted(String),
    /// Data arrived corrupt (a digest or size that does not match).
    #[error("{0}")]
    DataLoss(String),
    /// Something took longer than its configured deadline.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// Credentials were refused or are missing.
    #[error("{0}")]
    Unauthenticated(String),
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

/// An image failure, by its kind; the message is its whole cause chain.
///
/// A registry's refusal of credentials is Unauthenticated, not PermissionDenied:
/// what was refused is the authentication the request carried (or its absence),
/// and the remedy is other credentials (an imagePullSecret), which is what
/// Unauthenticated means; PermissionDenied is for a caller who is identified and
/// still not allowed. A registry that stalls past `images.progress_timeout_secs` is
/// DeadlineExceeded, telling it apart from one that cannot be reached (Unavailable).
impl From<ImageError> for CriError {
    fn from(e: ImageError) -> CriError {
        let message = e.report();
        match e.root() {
            ImageError::InvalidReference { .. } => CriError::InvalidArgument {
                field: "image.image".into(),
                message,
            },
            ImageError::InvalidAuth { field, reason } => CriError::invalid(*field, *reason),
            ImageError::NotFound { .. } | ImageError::NoMatchingPlatform { .. } => {
                CriError::NotFound(message)
            }
            ImageError::Unauthorized { .. } => CriError::Unauthenticated(message),
            ImageError::Unavailable { .. } => CriError::Unavailable(message),
            ImageError::Stalled { .. } => CriError::DeadlineExceeded(message),
            ImageError::Mismatch { .. } => CriError::DataLoss(message),
            ImageError::LayerTooLarge { .. } | ImageError::DiskFull { .. } => {
                CriError::ResourceExhausted(message)
            }
            ImageError::InvalidImage { .. } => CriError::FailedPrecondition(message),
            ImageError::Store { .. }
            | ImageError::Snapshotter { .. }
            | ImageError::Internal { .. }
            | ImageError::Context { .. }
            | ImageError::Shared(_) => CriError::Internal(message),
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
            CriError::DataLoss(_) => Code::DataLoss,
            CriError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            CriError::Unauthenticated(_) => Code::Unauthenticated,
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

    fn io(msg: &str) -> crius_images::BoxError {
        Box::new(std::io::Error::other(msg.to_string()))
    }

    fn pulling(source: ImageError) -> ImageError {
        ImageError::Context {
            context: "pulling docker.io/library/busybox:latest".into(),
            source: Box::new(source),
        }
    }

    #[test]
    fn image_errors_get_their_codes_and_keep_the_chain() {
        let cases = [
            (
                ImageError::InvalidReference {
                    reference: "a b".into(),
                    reason: "contains white space".into(),
                },
                Code::InvalidArgument,
                "image.image: image reference \"a b\": contains white space",
            ),
            (
                pulling(ImageError::Unavailable {
                    context: "fetching layer sha256:ab from docker.io".into(),
                    source: io("connection refused"),
                }),
                Code::Unavailable,
                "pulling docker.io/library/busybox:latest: fetching layer sha256:ab from docker.io: connection refused",
            ),
            (
                pulling(ImageError::Stalled {
                    context: "fetching layer sha256:ab".into(),
                    secs: 5,
                    source: None,
                }),
                Code::DeadlineExceeded,
                "sent no data for 5s",
            ),
            (
                pulling(ImageError::Mismatch {
                    context: "fetching layer sha256:ab".into(),
                    source: io("Invalid digest"),
                }),
                Code::DataLoss,
                "fetching layer sha256:ab: Invalid digest",
            ),
            (
                pulling(ImageError::LayerTooLarge {
                    context: "unpacking layer sha256:ab".into(),
                    limit: 1024,
                }),
                Code::ResourceExhausted,
                "more than 1024 bytes (images.max_layer_bytes)",
            ),
            (
                pulling(ImageError::DiskFull {
                    context: "storing blob sha256:ab".into(),
                    path: "/var/lib/crius/content".into(),
                    source: Box::new(std::io::Error::from_raw_os_error(libc::ENOSPC)),
                }),
                Code::ResourceExhausted,
                "no space left for /var/lib/crius/content",
            ),
            (
                pulling(ImageError::InvalidImage {
                    context: "reading the manifest".into(),
                    reason: "schema 1".into(),
                    source: None,
                }),
                Code::FailedPrecondition,
                "reading the manifest: schema 1",
            ),
            (
                pulling(ImageError::Internal {
                    context: "a task was lost".into(),
                    source: None,
                }),
                Code::Internal,
                "a task was lost",
            ),
            (
                ImageError::Shared(std::sync::Arc::new(ImageError::InvalidAuth {
                    field: "auth.auth",
                    reason: "is not base64 of user:password",
                })),
                Code::InvalidArgument,
                "auth.auth: is not base64 of user:password",
            ),
        ];
        for (e, code, text) in cases {
            let status = Status::from(CriError::from(e));
            assert_eq!(status.code(), code, "{}", status.message());
            assert!(
                status.message().contains(text),
                "{:?} should contain {text:?}",
                status.message()
            );
        }
    }
}
