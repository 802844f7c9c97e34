//! The redb handle behind [`Db`]: how the file is opened, and how the store keeps
//! working after an I/O error.
//!
//! redb checks every page of the file when it opens it (`check_integrity_on_open`),
//! so a file damaged behind its back fails to open with a typed error instead of
//! being trusted (an unchecked open may panic on such a file).
//!
//! After an I/O error (a full disk failing a commit, say) redb refuses every later
//! operation on that handle with `PreviousIo` until the database is closed and opened
//! again. The store does that itself: the handle that failed is dropped, and the next
//! call opens the file again (redb recovers the last commit) and goes on; an
//! operation refused with `PreviousIo` did nothing, so it is run once more on the new
//! handle. While the file cannot be opened again, each call reports why.

use std::path::Path;
use std::sync::{Arc, PoisonError, RwLockReadGuard};

use redb::{Database, DatabaseError};
use tracing::{info, warn};

use crate::{Db, StoreError};

/// Opens the redb database at a path.
pub(crate) type Opener = Arc<dyn Fn(&Path) -> Result<Database, DatabaseError> + Send + Sync>;

/// What opens the store's file in production: create it when missing.
pub(crate) fn create_file() -> Opener {
    Arc::new(|path| {
        redb::Builder::new()
            .set_check_integrity_on_open(true)
            .create(path)
    })
}

/// Opens an existing file, never creating one (for check and repair).
pub(crate) fn existing_file() -> Opener {
    Arc::new(|path| {
        redb::Builder::new()
            .set_check_integrity_on_open(true)
            .open(path)
    })
}

/// The open database, or none after an I/O error until it is opened again.
pub(crate) struct Current {
    db: Option<Database>,
    /// Bumped whenever `db` is replaced, so that of several callers seeing the same
    /// failed handle only one reopens it.
    generation: u64,
}

/// Maps a failed open to the store's error.
pub(crate) fn open_error(path: &Path, e: DatabaseError) -> StoreError {
    match e {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            StoreError::InUse {
                path: path.to_path_buf(),
            }
        }
        e => StoreError::Open {
            path: path.to_path_buf(),
            source: Box::new(e.into()),
        },
    }
}

/// Opens the database, turning a panic inside redb (it asserts on some shapes of
/// damaged file in debug builds) into an error like any other damaged file.
pub(crate) fn open_db(opener: &Opener, path: &Path) -> Result<Database, StoreError> {
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| opener(path)));
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(open_error(path, e)),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "redb panicked".to_string());
            Err(StoreError::Open {
                path: path.to_path_buf(),
                source: Box::new(redb::Error::Corrupted(what)),
            })
        }
    }
}

impl Current {
    pub(crate) fn new(db: Database) -> Current {
        Current {
            db: Some(db),
            generation: 0,
        }
    }
}

impl Db {
    fn current(&self) -> RwLockReadGuard<'_, Current> {
        self.current.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` against the open database, reopening it after an I/O error (see the
    /// module docs). Errors name the database file.
    pub(crate) fn with<T>(
        &self,
        f: impl Fn(&Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        // Two reopens at most: one for the handle this call found broken, one more if
        // another caller's reopen in between failed.
        let mut reopens = 0;
        loop {
            let (generation, result) = {
                let current = self.current();
                (current.generation, current.db.as_ref().map(&f))
            };
            match result {
                Some(Err(e)) if e.is_previous_io() && reopens < 2 => {
                    self.reopen(generation)?;
                    reopens += 1;
                }
                Some(Err(e)) if e.is_io() => {
                    let e = e.located(&self.path);
                    self.discard(generation, &e);
                    return Err(e);
                }
                Some(result) => return result.map_err(|e| e.located(&self.path)),
                None if reopens < 2 => {
                    self.reopen(generation)?;
                    reopens += 1;
                }
                None => {
                    return Err(
                        StoreError::db("reopening the store")(redb::Error::PreviousIo)
                            .located(&self.path),
                    );
                }
            }
        }
    }

    /// Drops the handle that failed (unless another caller replaced it already).
    fn discard(&self, generation: u64, cause: &StoreError) {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if current.generation == generation && current.db.is_some() {
            warn!(error = %crate::error::chain(cause), "metadata store I/O error: reopening it at the next call");
            current.db = None;
            current.generation += 1;
        }
    }

    /// Opens the file again in place of the handle of `generation`; a no-op when
    /// another caller did it already.
    fn reopen(&self, generation: u64) -> Result<(), StoreError> {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if current.generation != generation {
            return Ok(());
        }
        // The old handle holds the file's lock: it goes before the new open.
        current.db = None;
        current.generation += 1;
        let db = open_db(&self.opener, &self.path)?;
        info!(store = %self.path.display(), "metadata store reopened");
        current.db = Some(db);
        Ok(())
    }
}
