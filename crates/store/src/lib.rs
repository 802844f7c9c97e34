//! The metadata store of criusd: an embedded redb database (`<state_dir>/store.redb`)
//! holding pod sandboxes, containers, images and the pod network's IP leases.
//!
//! Invariants:
//! - Every change is one write transaction, so a crash leaves either the old or the
//!   new state, never a mix (redb commits are atomic and durable).
//! - A pod's or container's reserved name and its record are written and deleted in
//!   the same transaction: a name never points at nothing, and a record's name is
//!   always reserved.
//! - An image reference (tag or digest) points at exactly one image, and that image's
//!   record lists it; both change in one transaction.
//! - Records are JSON, so a newer criusd can add optional fields and still read what
//!   an older one wrote.
//!
//! One module per table: [`pods`], [`containers`], [`images`], [`leases`] (the
//! [`crius_cni::LeaseStore`] the built-in bridge keeps its addresses in), and `meta`
//! (the schema version). [`Db`] is the synchronous API, for code already on a blocking
//! thread; [`Store`] wraps it in async methods that run each transaction on tokio's
//! blocking pool, so async callers never block a worker on disk I/O.

mod error;
mod meta;
mod table;

pub mod containers;
pub mod images;
pub mod leases;
pub mod pods;

use std::path::Path;
use std::sync::Arc;

pub use containers::{ContainerRecord, ContainerState};
pub use error::StoreError;
pub use images::{ImageRecord, LayerRecord};
pub use pods::{PinnedNamespaces, PodRecord, PodState};

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
    db: redb::Database,
    path: std::path::PathBuf,
}

impl Db {
    /// Opens (or creates) the store at `path`, checking its schema version and making
    /// every table exist.
    pub fn open(path: &Path) -> Result<Db, StoreError> {
        let db = redb::Database::create(path).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source: source.into(),
        })?;
        meta::init(&db, path)?;
        Ok(Db {
            db,
            path: path.to_path_buf(),
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
