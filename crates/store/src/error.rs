//! What can go wrong in the store, with the cause kept.

use std::path::{Path, PathBuf};

/// A store failure. The daemon cannot trust its state after one, so callers report
/// it as an internal error (or, when the disk is full, as resource exhaustion).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or created (missing, unreadable, or
    /// not a redb file redb can check and recover).
    #[error("opening the metadata store {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: Box<redb::Error>,
    },
    /// Another process holds the database (redb locks it for one writer).
    #[error(
        "the metadata store {} is in use by another process (a running criusd?): stop it first",
        path.display()
    )]
    InUse { path: PathBuf },
    /// The database was written by a newer criusd, whose records this one may not
    /// understand.
    #[error(
        "the metadata store {} has schema version {found}; this criusd reads versions up to {supported}: run a criusd that supports version {found}, or move the state directory aside (criusd then starts empty and forgets the pods and containers it held)",
        path.display()
    )]
    SchemaTooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    /// The `meta` table holds no schema version this criusd can read.
    #[error(
        "the metadata store {} has no readable schema version (found {found:?}); it was not written by criusd",
        path.display()
    )]
    SchemaUnreadable { path: PathBuf, found: String },
    /// A migration from `from` to `from + 1` failed; its transaction was not
    /// committed, so the file is still at the version it had.
    #[error(
        "migrating the metadata store {} from schema version {from} to {}",
        path.display(),
        from + 1
    )]
    Migration {
        path: PathBuf,
        from: u32,
        #[source]
        source: Box<StoreError>,
    },
    /// A transaction failed.
    #[error("metadata store {}: {op}", path.display())]
    Db {
        /// The database file (filled in by the transaction wrapper).
        path: PathBuf,
        op: &'static str,
        #[source]
        source: Box<redb::Error>,
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
    /// The backup copy a repair makes first could not be written.
    #[error("writing the backup copy {} of the metadata store", path.display())]
    Backup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The blocking task running a transaction was lost (cancelled or panicked).
    #[error("a metadata store task was lost")]
    Lost(#[source] tokio::task::JoinError),
}

impl StoreError {
    /// A failed transaction step; the path is filled in by the transaction wrapper.
    pub(crate) fn db(op: &'static str) -> impl FnOnce(redb::Error) -> StoreError {
        move |source| StoreError::Db {
            path: PathBuf::new(),
            op,
            source: Box::new(source),
        }
    }

    /// Names the database file in a transaction error that does not name it yet.
    pub(crate) fn located(self, at: &Path) -> StoreError {
        match self {
            StoreError::Db { path, op, source } if path.as_os_str().is_empty() => StoreError::Db {
                path: at.to_path_buf(),
                op,
                source,
            },
            e => e,
        }
    }

    /// Whether the failure is the disk being full (ENOSPC, EDQUOT), in any of the
    /// forms redb reports it: an I/O error, an I/O error inside a backend error, or
    /// one wrapped in another I/O error.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Open { source, .. } | StoreError::Db { source, .. } => {
                redb_disk_full(source)
            }
            StoreError::Migration { source, .. } => source.is_disk_full(),
            StoreError::Backup { source, .. } => io_disk_full(source),
            _ => false,
        }
    }

    /// Whether the failure came from the file: redb then refuses every later
    /// operation on that handle (`PreviousIo`) until the database is reopened.
    pub(crate) fn is_io(&self) -> bool {
        matches!(
            self,
            StoreError::Db { source, .. }
                if matches!(**source, redb::Error::Io(_) | redb::Error::PreviousIo)
        )
    }

    /// Whether redb refused the operation because of an earlier I/O failure on the
    /// same handle (the operation itself did nothing).
    pub(crate) fn is_previous_io(&self) -> bool {
        matches!(
            self,
            StoreError::Db { source, .. } if matches!(**source, redb::Error::PreviousIo)
        )
    }
}

/// The error's message followed by each of its causes.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

fn redb_disk_full(e: &redb::Error) -> bool {
    match e {
        redb::Error::Io(io) => io_disk_full(io),
        redb::Error::Backend(inner) => inner
            .downcast_ref::<std::io::Error>()
            .is_some_and(io_disk_full),
        _ => false,
    }
}

fn io_disk_full(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    if matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT))
        || matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
    {
        return true;
    }
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<std::io::Error>())
        .is_some_and(io_disk_full)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(source: redb::Error) -> StoreError {
        StoreError::db("writing a record")(source).located(Path::new("/s/store.redb"))
    }

    #[test]
    fn disk_full_is_recognised_in_every_form_redb_reports_it() {
        let enospc = || std::io::Error::from_raw_os_error(28);
        let full = [
            redb::Error::Io(enospc()),
            redb::Error::Io(std::io::Error::from_raw_os_error(122)),
            redb::Error::Io(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "no room",
            )),
            redb::Error::Io(std::io::Error::other(enospc())),
            redb::Error::Backend(Box::new(enospc())),
        ];
        for source in full {
            let text = format!("{source:?}");
            let e = db(source);
            assert!(e.is_disk_full(), "{text}");
            assert_eq!(
                e.to_string(),
                "metadata store /s/store.redb: writing a record"
            );
        }
        let not_full = [
            redb::Error::Io(std::io::Error::from_raw_os_error(5)),
            redb::Error::PreviousIo,
            redb::Error::Corrupted("x".into()),
            redb::Error::Backend(Box::new(std::fmt::Error)),
        ];
        for source in not_full {
            let text = format!("{source:?}");
            assert!(!db(source).is_disk_full(), "{text}");
        }
        let migration = StoreError::Migration {
            path: "/s/store.redb".into(),
            from: 1,
            source: Box::new(db(redb::Error::Io(enospc()))),
        };
        assert!(migration.is_disk_full());
        assert_eq!(
            migration.to_string(),
            "migrating the metadata store /s/store.redb from schema version 1 to 2"
        );
        let backup = StoreError::Backup {
            path: "/s/store.redb.bak-x".into(),
            source: enospc(),
        };
        assert!(backup.is_disk_full());
    }

    #[test]
    fn io_failures_ask_for_a_reopen() {
        assert!(db(redb::Error::PreviousIo).is_previous_io());
        assert!(db(redb::Error::PreviousIo).is_io());
        assert!(db(redb::Error::Io(std::io::Error::from_raw_os_error(5))).is_io());
        assert!(!db(redb::Error::Corrupted("x".into())).is_io());
    }
}
