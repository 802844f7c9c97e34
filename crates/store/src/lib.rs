//! The metadata store of criusd: an embedded redb database (`<state_dir>/store.redb`)
//! holding pod sandboxes, containers, images and the pod network's IP leases.
//!
//! Invariants:
//! - Every change is one write transaction, so a crash leaves either the old or the
//!   new state, never a mix (redb commits are atomic and durable).
//! - A pod's or container's reserved name and its record are written and deleted in
//!   the same transaction: a name never points at nothing, and a record's name is
//!   always reserved. The same holds for a container's `containers_by_pod` entry.
//! - An image reference (tag or digest) points at exactly one image, and that image's
//!   record lists it; both change in one transaction.
//! - Records are JSON, so a newer criusd can add optional fields and still read what
//!   an older one wrote.
//!
//! One module per table: [`pods`], [`containers`], [`images`], [`leases`] (the
//! [`crius_cni::LeaseStore`] the built-in bridge keeps its addresses in), and `meta`
//! (the schema version and the migrations). [`Db`] is the synchronous API, for code
//! already on a blocking thread; [`Store`] wraps it in async methods that run each
//! transaction on tokio's blocking pool, so async callers never block a worker on
//! disk I/O.
//!
//! # Schema versions
//!
//! The `meta` table records the schema version ([`SCHEMA_VERSION`]). Opening an
//! older store migrates it in place, in one transaction (a crash part way leaves the
//! old version intact); a store from a newer criusd is refused
//! ([`StoreError::SchemaTooNew`]) and left as it is.
//!
//! # Damage, and the repair path
//!
//! redb checksums its pages, and the store has it check the whole file at every
//! open: a truncated or overwritten file fails [`Db::open`] with
//! [`StoreError::Open`] (never a panic), and criusd does not start. An empty file is
//! a new store. A record that is intact for redb but no longer decodes (written by a
//! buggy or incompatible criusd) does not stop the daemon: list calls skip it (and
//! log it once), reading it by id is [`StoreError::Corrupt`] naming its table and key.
//!
//! With criusd stopped (redb lets one process hold the file; a second open is
//! [`StoreError::InUse`]):
//! - `criusd store check` ([`Db::check`]) prints the schema version, entries per
//!   table, records that do not decode, and dangling entries (a name, reference or
//!   `containers_by_pod` entry pointing at a missing record or at one that does not
//!   claim it; a record whose name or reference is not its own). It changes
//!   nothing, and exits non-zero on any problem.
//! - `criusd store repair` ([`Db::repair`]) first copies the file to
//!   `store.redb.bak-<UTC time>` next to it, then migrates an older schema, removes
//!   records that do not decode and leases that do not parse, and rebuilds every
//!   index from the records, in one transaction; it prints what it found and
//!   changed, and the check afterwards.
//! - A file redb itself refuses cannot be repaired record by record: restore a
//!   backup copy over it, or move it aside so criusd starts with an empty store (the
//!   pods and containers it held are then unknown to criusd and must be cleaned up
//!   by hand).
//!
//! # I/O errors and full disks
//!
//! A write that fails because the disk is full is [`StoreError::is_disk_full`]
//! (criusd answers ResourceExhausted naming the file). redb then refuses every later
//! operation on that handle; the store drops it and opens the file again at the
//! next call (see `handle`), so it works again as soon as there is room.

mod check;
mod error;
mod handle;
mod meta;
mod repair;
mod table;
#[cfg(test)]
mod tests;

pub mod containers;
pub mod images;
pub mod leases;
pub mod pods;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use tracing::info;

pub use check::{CheckReport, Problem, TableCount};
pub use containers::{ContainerRecord, ContainerState};
pub use error::StoreError;
pub use images::{ImageRecord, LayerRecord};
pub use meta::SCHEMA_VERSION;
pub use pods::{PinnedNamespaces, PodRecord, PodState};
pub use repair::RepairReport;

/// The outcome of reserving a name with a new record.
#[derive(Debug, PartialEq, Eq)]
pub enum Reserve {
    /// The record was written and the name is now its own.
    Done,
    /// The name belongs to this existing record; nothing was written.
    Taken(String),
}

/// The synchronous store: each method is one redb transaction. Blocking.
pub struct Db {
    path: PathBuf,
    /// How the file is opened (again, after an I/O error).
    opener: handle::Opener,
    current: RwLock<handle::Current>,
    /// Records already logged as undecodable, so a list call logs each once.
    skipped: Mutex<HashSet<(String, String)>>,
}

impl Db {
    /// Opens (or creates) the store at `path`, checking its schema version,
    /// migrating an older store to [`SCHEMA_VERSION`] and making every table exist.
    pub fn open(path: &Path) -> Result<Db, StoreError> {
        Db::open_with(
            path,
            handle::create_file(),
            meta::MIGRATIONS,
            SCHEMA_VERSION,
        )
    }

    /// [`Db::open`] with another opener and schema (for tests).
    pub(crate) fn open_with(
        path: &Path,
        opener: handle::Opener,
        migrations: &[meta::Migration],
        target: u32,
    ) -> Result<Db, StoreError> {
        let db = Db::open_raw(path, opener)?;
        if let Some(found) = meta::init(&db, migrations, target)?.filter(|v| *v < target) {
            info!(store = %path.display(), from = found, to = target, "metadata store migrated");
        }
        Ok(db)
    }

    /// Opens an existing store as it is, for [`Db::check`] and [`Db::repair`]: never
    /// creates the file, never migrates it (a repair does, after its backup), and
    /// refuses a newer schema. Fails with [`StoreError::InUse`] while a daemon holds
    /// the store.
    pub fn open_existing(path: &Path) -> Result<Db, StoreError> {
        let db = Db::open_raw(path, handle::existing_file())?;
        match db.schema_version()? {
            Some(found) if found > SCHEMA_VERSION => Err(StoreError::SchemaTooNew {
                path: path.to_path_buf(),
                found,
                supported: SCHEMA_VERSION,
            }),
            Some(_) => Ok(db),
            None => Err(StoreError::SchemaUnreadable {
                path: path.to_path_buf(),
                found: "nothing".into(),
            }),
        }
    }

    fn open_raw(path: &Path, opener: handle::Opener) -> Result<Db, StoreError> {
        let db = handle::open_db(&opener, path)?;
        Ok(Db {
            path: path.to_path_buf(),
            opener,
            current: RwLock::new(handle::Current::new(db)),
            skipped: Mutex::new(HashSet::new()),
        })
    }

    /// The schema version the file records (`None` when it records none).
    pub fn schema_version(&self) -> Result<Option<u32>, StoreError> {
        let op = "reading the schema version";
        self.read(op, |txn| match txn.open_table(meta::META) {
            Ok(t) => meta::read_version(self, &t),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(table::redb_err(op)(e)),
        })
    }

    /// The database file, as opened: what a "disk full" error names.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The async store. Cheap to clone (one shared database).
#[derive(Clone)]
pub struct Store {
    db: Arc<Db>,
}

impl Store {
    /// Opens (or creates) the store at `path`. Blocking: call it at start-up or from
    /// the blocking pool.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Ok(Store {
            db: Arc::new(Db::open(path)?),
        })
    }

    /// The database file, as opened.
    pub fn path(&self) -> &Path {
        self.db.path()
    }

    /// The synchronous API, for callers already on a blocking thread (several reads
    /// and writes in one blocking closure, or the network backend's lease calls).
    pub fn blocking(&self) -> &Db {
        &self.db
    }

    /// Runs `f` against the database on the blocking pool.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Db) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(StoreError::Lost)?
    }
}

/// Async twins of [`Db`]'s methods: each takes the same arguments (borrowed), owns a
/// copy of them and runs the synchronous method on the blocking pool.
macro_rules! async_twins {
    ($( $(#[$doc:meta])* fn $name:ident($($arg:ident: &$ty:ty),*) -> $ret:ty; )*) => {
        impl Store {
            $(
                $(#[$doc])*
                pub async fn $name(&self, $($arg: &$ty),*) -> Result<$ret, StoreError> {
                    $(let $arg = $arg.to_owned();)*
                    self.run(move |db| db.$name($(&$arg),*)).await
                }
            )*
        }
    };
}

async_twins! {
    /// See [`Db::insert_pod`].
    fn insert_pod(pod: &PodRecord) -> Reserve;
    /// See [`Db::update_pod`].
    fn update_pod(pod: &PodRecord) -> ();
    /// See [`Db::delete_pod`].
    fn delete_pod(id: &str) -> ();
    /// See [`Db::pod`].
    fn pod(id: &str) -> Option<PodRecord>;
    /// See [`Db::pods`].
    fn pods() -> Vec<PodRecord>;
    /// See [`Db::pod_id_by_name`].
    fn pod_id_by_name(name: &str) -> Option<String>;
    /// See [`Db::insert_container`].
    fn insert_container(c: &ContainerRecord) -> Reserve;
    /// See [`Db::update_container`].
    fn update_container(c: &ContainerRecord) -> ();
    /// See [`Db::delete_container`].
    fn delete_container(id: &str) -> ();
    /// See [`Db::container`].
    fn container(id: &str) -> Option<ContainerRecord>;
    /// See [`Db::containers`].
    fn containers() -> Vec<ContainerRecord>;
    /// See [`Db::containers_of_pod`].
    fn containers_of_pod(pod_id: &str) -> Vec<ContainerRecord>;
    /// See [`Db::container_id_by_name`].
    fn container_id_by_name(name: &str) -> Option<String>;
    /// See [`Db::put_image`].
    fn put_image(image: &ImageRecord) -> ();
    /// See [`Db::image`].
    fn image(id: &str) -> Option<ImageRecord>;
    /// See [`Db::images`].
    fn images() -> Vec<ImageRecord>;
    /// See [`Db::image_id_by_ref`].
    fn image_id_by_ref(reference: &str) -> Option<String>;
    /// See [`Db::remove_image_ref`].
    fn remove_image_ref(reference: &str) -> Option<ImageRecord>;
    /// See [`Db::delete_image`].
    fn delete_image(id: &str) -> ();
}
