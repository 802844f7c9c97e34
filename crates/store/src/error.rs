//! What can go wrong in the store, with the cause kept.

use std::path::PathBuf;

/// A store failure. The daemon cannot trust its state after one, so callers report
/// it as an internal error (or, when the disk is full, as resource exhaustion).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or created.
    #[error("opening the metadata store {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: redb::Error,
    },
    /// The database was written by a newer criusd, whose records this one may not
    /// understand.
    #[error(
        "the metadata store {} has schema version {found}; this criusd reads version {supported}: run the newer criusd, or move the state directory aside",
        path.display()
    )]
    SchemaTooNew {
        path: PathBuf,
        found: String,
        supported: String,
    },
    /// A transaction failed.
    #[error("metadata store: {op}")]
    Db {
        op: &'static str,
        #[source]
        source: redb::Error,
    },
    /// A record could not be decoded.
    #[error("metadata store record {table}/{key} is unreadable")]
    Corrupt {
        table: String,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    /// A record could not be encoded.
    #[error("encoding a {table} record")]
    Encode {
        table: String,
        #[source]
        source: serde_json::Error,
    },
    /// The blocking task running a transaction was lost (cancelled or panicked).
    #[error("a metadata store task was lost")]
    Lost(#[source] tokio::task::JoinError),
}

impl StoreError {
    /// A failed transaction step.
    pub(crate) fn db(op: &'static str) -> impl FnOnce(redb::Error) -> StoreError {
        move |source| StoreError::Db { op, source }
    }

    /// Whether the failure is the disk being full (ENOSPC, EDQUOT).
    pub fn is_disk_full(&self) -> bool {
        let source = match self {
            StoreError::Open { source, .. } | StoreError::Db { source, .. } => source,
            _ => return false,
        };
        let io = match source {
            redb::Error::Io(e) => Some(e),
            _ => None,
        };
        io.and_then(std::io::Error::raw_os_error)
            .is_some_and(|c| c == 28 || c == 122)
    }
}
