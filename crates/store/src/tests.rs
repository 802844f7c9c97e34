//! Tests of the store's handle and migrations that need its internals: a failed
//! migration, and a disk that fills and empties again under a backend that fails
//! writes on demand.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use redb::{ReadableDatabase, StorageBackend, TableDefinition, WriteTransaction};

use crate::handle::Opener;
use crate::meta::{MIGRATIONS, Migration};
use crate::pods::tests::record;
use crate::{Db, Reserve, SCHEMA_VERSION, StoreError};

fn fixture_copy(dir: &Path) -> PathBuf {
    let to = dir.join("store.redb");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1.redb"),
        &to,
    )
    .unwrap();
    to
}

fn raw_version_and_tables(path: &Path) -> (String, Vec<String>) {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn
        .open_table(TableDefinition::<&str, &str>::new("meta"))
        .unwrap();
    let v = meta
        .get("schema_version")
        .unwrap()
        .unwrap()
        .value()
        .to_string();
    let tables = txn
        .list_tables()
        .unwrap()
        .map(|t| redb::TableHandle::name(&t).to_string())
        .collect();
    (v, tables)
}

fn failing(_: &WriteTransaction) -> Result<(), StoreError> {
    Err(StoreError::db("a migration that fails")(
        redb::Error::Corrupted("boom".into()),
    ))
}

#[test]
fn a_failed_migration_leaves_the_old_version_intact() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture_copy(dir.path());
    // 1 → 2 succeeds, 2 → 3 fails: neither is committed.
    let steps = [
        MIGRATIONS[0],
        Migration {
            from: 2,
            run: failing,
        },
    ];
    let Err(e) = Db::open_with(&path, crate::handle::create_file(), &steps, 3) else {
        panic!("the migration succeeded")
    };
    assert!(matches!(&e, StoreError::Migration { from: 2, .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "migrating the metadata store {} from schema version 2 to 3",
            path.display()
        )
    );
    let (version, tables) = raw_version_and_tables(&path);
    assert_eq!(version, "1");
    assert!(
        !tables.contains(&"containers_by_pod".to_string()),
        "{tables:?}"
    );
    // The real migration still runs afterwards.
    let db = Db::open(&path).unwrap();
    assert_eq!(db.schema_version().unwrap(), Some(SCHEMA_VERSION));
    assert_eq!(db.containers().unwrap().len(), 1);
}

/// A file backend whose writes fail with ENOSPC while `full` is set.
#[derive(Debug)]
struct Fillable {
    inner: redb::backends::FileBackend,
    full: Arc<AtomicBool>,
}

impl StorageBackend for Fillable {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        if self.full.load(Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(28));
        }
        self.inner.write(offset, data)
    }
    fn close(&self) -> Result<(), std::io::Error> {
        self.inner.close()
    }
    fn try_lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_range(start, end)
    }
    fn try_lock_shared_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }
    fn lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.inner.lock_range(start, end)
    }
    fn lock_shared_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.inner.lock_shared_range(start, end)
    }
    fn unlock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.inner.unlock_range(start, end)
    }
    fn query_lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

fn fillable(full: Arc<AtomicBool>) -> Opener {
    Arc::new(move |path: &Path| {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let backend = Fillable {
            inner: redb::backends::FileBackend::new(file)?,
            full: full.clone(),
        };
        redb::Builder::new()
            .set_check_integrity_on_open(true)
            .create_with_backend(backend)
    })
}

fn open_fillable(path: &Path) -> (Db, Arc<AtomicBool>) {
    let full = Arc::new(AtomicBool::new(false));
    let db = Db::open_with(path, fillable(full.clone()), MIGRATIONS, SCHEMA_VERSION).unwrap();
    (db, full)
}

#[test]
fn a_full_disk_fails_writes_clearly_and_the_store_works_again_once_there_is_room() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let (db, full) = open_fillable(&path);
    assert_eq!(db.insert_pod(&record("a", "na")).unwrap(), Reserve::Done);

    full.store(true, Ordering::SeqCst);
    // Every write fails as a full disk naming the file (not as redb's PreviousIo),
    // the first and the later ones alike.
    for _ in 0..3 {
        let e = db.insert_pod(&record("b", "nb")).unwrap_err();
        assert!(e.is_disk_full(), "{e:?}");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        // Reads work, or fail as the full disk too (reopening may need to write).
        match db.pods() {
            Ok(pods) => assert_eq!(pods.len(), 1),
            Err(e) => assert!(e.is_disk_full(), "{e:?}"),
        }
    }

    full.store(false, Ordering::SeqCst);
    assert_eq!(db.insert_pod(&record("b", "nb")).unwrap(), Reserve::Done);
    let ids: Vec<String> = db.pods().unwrap().into_iter().map(|p| p.id).collect();
    assert_eq!(ids, ["a", "b"]);
    assert!(db.check().unwrap().is_clean());
    drop(db);
    let db = Db::open(&path).unwrap();
    assert_eq!(db.pods().unwrap().len(), 2);
    assert_eq!(db.pod_id_by_name("nb").unwrap().as_deref(), Some("b"));
}

#[test]
fn an_operation_refused_for_an_earlier_io_error_runs_again_on_a_reopened_handle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let (db, full) = open_fillable(&path);
    let calls = AtomicUsize::new(0);
    let out = db.with(|raw| {
        if calls.fetch_add(1, Ordering::SeqCst) == 0 {
            // Another caller's commit fails on this handle...
            full.store(true, Ordering::SeqCst);
            let txn = raw.begin_write().unwrap();
            txn.open_table(crate::pods::PODS).unwrap();
            assert!(txn.commit().is_err());
            full.store(false, Ordering::SeqCst);
            // ...so redb refuses this one without doing it.
            let refused = raw.begin_write().map(|_| ()).map_err(redb::Error::from);
            assert!(
                matches!(refused, Err(redb::Error::PreviousIo)),
                "{refused:?}"
            );
            return refused
                .map(|()| "not reached")
                .map_err(StoreError::db("writing"));
        }
        Ok("done")
    });
    assert_eq!(out.unwrap(), "done");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(db.insert_pod(&record("a", "na")).unwrap(), Reserve::Done);
}
