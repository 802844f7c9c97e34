//! The error vocabulary of criusd, and the one place where an error becomes a gRPC
//! status (containerd's errdefs idea).
//!
//! Managers return [`CriError`]: either a kind the caller can act on (a named invalid
//! field, not found, already exists, failed precondition, …) or a component's own
//! typed error, kept whole with its cause chain. [`CriError::code`] decides the gRPC
//! code; [`status_message`] writes the message with every cause, so the kubelet's
//! events say what failed and why.

use std::sync::Arc;

use crius_cni::NetworkError;
use crius_images::ImageError;
use crius_spec::SpecError;
use crius_store::StoreError;
use tonic::{Code, Status};

/// A failed CRI call.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// The request is malformed; `field` is its path, e.g. `config.metadata.name`.
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is well formed but the object is not in a state that allows it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A limit is reached; retrying later may succeed.
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    /// An RPC (or a part of one) crius does not serve.
    #[error("{0}")]
    Unimplemented(String),
    /// A file system operation failed.
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A call to a container's shim failed.
    #[error("{context}")]
    Shim {
        context: String,
        #[source]
        source: crius_shim::client::Error,
    },
    /// The snapshotter (layers, writable snapshots, mounts) failed.
    #[error("{context}")]
    Snapshot {
        context: String,
        #[source]
        source: crius_snapshotter::Error,
    },
    /// The namespace helper failed.
    #[error("{context}")]
    Pin {
        context: String,
        #[source]
        source: crate::pinns::PinError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// An image pull, lookup or removal failed (its refusals of the reference are
    /// `InvalidArgument`).
    #[error(transparent)]
    Image(ImageError),
    /// Spec generation failed on the node (its refusals of fields are
    /// `InvalidArgument`).
    #[error(transparent)]
    Spec(SpecError),
    #[error(transparent)]
    Stream(#[from] crius_streaming::StreamError),
    /// An NRI plugin refused the call, or plugins' adjustments conflict.
    #[error(transparent)]
    Nri(#[from] crate::nri::NriError),
    /// One failure handed to several callers (a creation a retry joined).
    #[error(transparent)]
    Shared(Arc<CriError>),
    /// A broken invariant of criusd itself (no outside cause).
    #[error("{0}")]
    Internal(String),
}

/// The result type of criusd's managers and services.
pub type CriResult<T> = Result<T, CriError>;

impl CriError {
    /// An invalid field: `field` is the request path, e.g. `config.metadata.name`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> CriError {
        CriError::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    /// A file system failure while doing `context`.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> CriError {
        let context = context.into();
        move |source| CriError::Io { context, source }
    }

    /// A shim call failure while doing `context`.
    pub fn shim(context: impl Into<String>) -> impl FnOnce(crius_shim::client::Error) -> CriError {
        let context = context.into();
        move |source| CriError::Shim { context, source }
    }

    /// A snapshotter failure while doing `context`.
    pub fn snapshot(
        context: impl Into<String>,
    ) -> impl FnOnce(crius_snapshotter::Error) -> CriError {
        let context = context.into();
        move |source| CriError::Snapshot { context, source }
    }

    /// A shim call that did not get through to a shim still there (see
    /// `crius_shim::client::Error::is_transient`).
    pub fn is_transient_shim_failure(&self) -> bool {
        matches!(self, CriError::Shim { source, .. } if source.is_transient())
    }

    /// The gRPC code for this error: the one mapping in criusd.
    pub fn code(&self) -> Code {
        match self {
            CriError::InvalidArgument { .. } => Code::InvalidArgument,
            CriError::NotFound(_) => Code::NotFound,
            CriError::AlreadyExists(_) => Code::AlreadyExists,
            CriError::FailedPrecondition(_) => Code::FailedPrecondition,
            CriError::ResourceExhausted(_) => Code::ResourceExhausted,
            CriError::Unavailable(_) => Code::Unavailable,
            CriError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            CriError::Unimplemented(_) => Code::Unimplemented,
            CriError::Io { source, .. } if is_disk_full(source) => Code::ResourceExhausted,
            CriError::Io { .. } | CriError::Pin { .. } | CriError::Internal(_) => Code::Internal,
            CriError::Shim { source, .. } => shim_code(source),
            CriError::Snapshot { source, .. } => snapshot_code(source),
            CriError::Store(e) if e.is_disk_full() => Code::ResourceExhausted,
            CriError::Store(_) => Code::Internal,
            CriError::Network(e) => network_code(e),
            CriError::Image(e) => image_code(e),
            CriError::Spec(SpecError::Unsupported { .. }) => Code::FailedPrecondition,
            CriError::Spec(_) => Code::Internal,
            CriError::Stream(crius_streaming::StreamError::TooManyPending { .. }) => {
                Code::ResourceExhausted
            }
            CriError::Stream(_) => Code::Internal,
            CriError::Nri(_) => Code::FailedPrecondition,
            CriError::Shared(e) => e.code(),
        }
    }
}

/// ENOSPC or EDQUOT, also where a context was added with `io::Error::new(kind, ..)`
/// (which keeps the kind but not the errno) or the error wraps another one.
fn is_disk_full(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
        || e.get_ref()
            .and_then(|inner| inner.downcast_ref::<std::io::Error>())
            .is_some_and(is_disk_full)
}

fn shim_code(e: &crius_shim::client::Error) -> Code {
    use crius_shim::client::Error;
    match e {
        // The shim (and so the container's runtime state) is gone: the container
        // cannot do what was asked, but nothing is wrong with criusd.
        Error::ShimGone(_) => Code::FailedPrecondition,
        Error::Rpc { code, .. } => match code {
            ttrpc::Code::NOT_FOUND => Code::NotFound,
            ttrpc::Code::INVALID_ARGUMENT => Code::InvalidArgument,
            ttrpc::Code::FAILED_PRECONDITION => Code::FailedPrecondition,
            ttrpc::Code::ALREADY_EXISTS => Code::AlreadyExists,
            ttrpc::Code::DEADLINE_EXCEEDED => Code::DeadlineExceeded,
            ttrpc::Code::RESOURCE_EXHAUSTED => Code::ResourceExhausted,
            _ => Code::Internal,
        },
        Error::Start(_) | Error::Connect { .. } | Error::Transport(_) => Code::Internal,
    }
}

fn snapshot_code(e: &crius_snapshotter::Error) -> Code {
    use crius_snapshotter::Error;
    match e {
        Error::NotFound { .. } => Code::NotFound,
        Error::AlreadyExists { .. } => Code::AlreadyExists,
        Error::InUse { .. } => Code::FailedPrecondition,
        Error::DigestMismatch { .. } | Error::SizeMismatch { .. } => Code::DataLoss,
        _ if std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .is_some_and(is_disk_full) =>
        {
            Code::ResourceExhausted
        }
        _ => Code::Internal,
    }
}

fn image_code(e: &ImageError) -> Code {
    match e.root() {
        ImageError::InvalidReference { .. } | ImageError::InvalidAuth { .. } => {
            Code::InvalidArgument
        }
        ImageError::NotFound { .. } | ImageError::NoMatchingPlatform { .. } => Code::NotFound,
        // What the registry refused is the authentication the request carried (or
        // its absence); the remedy is other credentials (an imagePullSecret), which
        // is what Unauthenticated means. PermissionDenied is for a caller who is
        // identified and still not allowed.
        ImageError::Unauthorized { .. } => Code::Unauthenticated,
        ImageError::Unavailable { .. } => Code::Unavailable,
        // Stalled past `images.progress_timeout_secs`: told apart from a registry
        // that cannot be reached.
        ImageError::Stalled { .. } => Code::DeadlineExceeded,
        ImageError::Mismatch { .. } => Code::DataLoss,
        ImageError::LayerTooLarge { .. } | ImageError::DiskFull { .. } => Code::ResourceExhausted,
        // The node's registry configuration must change first.
        ImageError::InvalidImage { .. }
        | ImageError::HostsConfig { .. }
        | ImageError::NoEndpoint { .. } => Code::FailedPrecondition,
        ImageError::Store { .. }
        | ImageError::Snapshotter { .. }
        | ImageError::Internal { .. }
        | ImageError::Context { .. }
        | ImageError::Shared(_) => Code::Internal,
    }
}

fn network_code(e: &NetworkError) -> Code {
    match e {
        NetworkError::HostPortInUse { .. } => Code::FailedPrecondition,
        NetworkError::AddressesExhausted { .. } | NetworkError::DiskFull { .. } => {
            Code::ResourceExhausted
        }
        NetworkError::InvalidRequest { .. } => Code::InvalidArgument,
        NetworkError::NotReady { .. } => Code::Unavailable,
        NetworkError::Setup { .. } | NetworkError::Teardown { .. } => Code::Internal,
    }
}

/// The error's message followed by each cause that adds something ("creating the
/// container: runc create: exit status 1: ..."). A cause whose text the message
/// already ends with is not repeated.
pub fn status_message(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !text.is_empty() && !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

/// A refused reference or auth field is a named invalid argument; everything else is
/// kept whole.
impl From<ImageError> for CriError {
    fn from(e: ImageError) -> Self {
        match e.root() {
            ImageError::InvalidReference { .. } => CriError::InvalidArgument {
                field: "image.image".into(),
                message: e.report(),
            },
            ImageError::InvalidAuth { field, reason } => CriError::invalid(*field, *reason),
            _ => CriError::Image(e),
        }
    }
}

/// A refused field stays a named invalid argument; everything else is kept whole.
impl From<SpecError> for CriError {
    fn from(e: SpecError) -> Self {
        match e {
            SpecError::InvalidField { field, message } => {
                CriError::InvalidArgument { field, message }
            }
            e => CriError::Spec(e),
        }
    }
}

impl From<CriError> for Status {
    fn from(e: CriError) -> Status {
        Status::new(e.code(), status_message(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_what_the_caller_can_do() {
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(
            CriError::io("writing config.json")(full).code(),
            Code::ResourceExhausted
        );
        // A context added the way podfiles adds one keeps the kind only.
        let wrapped = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let wrapped = std::io::Error::new(wrapped.kind(), format!("writing /p/hosts: {wrapped}"));
        assert_eq!(
            CriError::io("writing pod files")(wrapped).code(),
            Code::ResourceExhausted
        );
        let other = std::io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(CriError::io("x")(other).code(), Code::Internal);
        let taken = NetworkError::HostPortInUse {
            pod_id: "p".into(),
            host_port: 80,
            protocol: crius_cni::Protocol::Tcp,
            owner: "q".into(),
        };
        assert_eq!(CriError::from(taken).code(), Code::FailedPrecondition);
        let pool = NetworkError::AddressesExhausted {
            pod_id: "p".into(),
            message: "10.88.0.0/30".into(),
        };
        assert_eq!(CriError::from(pool).code(), Code::ResourceExhausted);
        let full = NetworkError::DiskFull {
            pod_id: "p".into(),
            message: "lease store: no space left: /var/lib/crius/store.redb".into(),
        };
        assert_eq!(CriError::from(full).code(), Code::ResourceExhausted);
        let gone = crius_shim::client::Error::ShimGone("/s".into());
        let gone = CriError::shim("stopping")(gone);
        assert_eq!(gone.code(), Code::FailedPrecondition);
        // Only a call that did not get through to a live shim is worth making again.
        assert!(!gone.is_transient_shim_failure());
        let broke = crius_shim::client::Error::Transport("connection reset".into());
        assert!(CriError::shim("reading")(broke).is_transient_shim_failure());
        let answered = crius_shim::client::Error::Rpc {
            code: ttrpc::Code::NOT_FOUND,
            message: "no such process".into(),
        };
        assert!(!CriError::shim("reading")(answered).is_transient_shim_failure());
        let unsupported = CriError::from(SpecError::Unsupported {
            field: "config.y".into(),
            message: "not yet".into(),
        });
        assert_eq!(unsupported.to_string(), "config.y: not yet");
        assert_eq!(unsupported.code(), Code::FailedPrecondition);
        let refused = CriError::from(SpecError::InvalidField {
            field: "config.x".into(),
            message: "bad".into(),
        });
        assert!(matches!(&refused, CriError::InvalidArgument { field, .. } if field == "config.x"));
        let shared = CriError::Shared(Arc::new(CriError::AlreadyExists("n".into())));
        assert_eq!(shared.code(), Code::AlreadyExists);
    }

    #[test]
    fn the_message_keeps_the_cause_chain_without_repeats() {
        let e = CriError::io("writing /run/x/config.json")(std::io::Error::from_raw_os_error(
            libc::ENOSPC,
        ));
        let msg = status_message(&e);
        assert!(msg.starts_with("writing /run/x/config.json: "), "{msg}");
        assert!(msg.contains("No space left on device"), "{msg}");
        let status = Status::from(CriError::invalid(
            "config.metadata.name",
            "must not be empty",
        ));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "config.metadata.name: must not be empty");
    }

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
