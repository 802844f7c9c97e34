//! The metadata store: an embedded redb database at `<state_dir>/store.redb`.
//!
//! Invariants:
//! - Every change is one write transaction, so a crash leaves either the old or the
//!   new state, never a mix (redb commits are atomic and durable).
//! - A pod's reserved name (`name_namespace_uid_attempt`) and its record are written
//!   and deleted in the same transaction: the name index never points at nothing.
//! - Records are JSON, so a newer criusd can add optional fields and still read them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crius_cni::{IpFamily, Lease, LeaseStore, LeaseStoreError};
use k8s_cri::v1::PodSandboxConfig;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const PODS: TableDefinition<&str, &[u8]> = TableDefinition::new("pods");
const POD_NAMES: TableDefinition<&str, &str> = TableDefinition::new("pod_names");
const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");
const IMAGE_REFS: TableDefinition<&str, &str> = TableDefinition::new("image_refs");
const CONTAINERS: TableDefinition<&str, &[u8]> = TableDefinition::new("containers");
const CONTAINER_NAMES: TableDefinition<&str, &str> = TableDefinition::new("container_names");
/// IP leases: `network \x1f family \x1f pod id` -> address.
const IP_LEASES: TableDefinition<&str, &str> = TableDefinition::new("ip_leases");

const SCHEMA_VERSION: &str = "1";

/// A store failure: the daemon cannot trust its state, so callers report it as
/// an internal error with this context.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("metadata store {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("metadata store: {0}")]
    Db(String),
    #[error("metadata store record {key}: {message}")]
    Corrupt { key: String, message: String },
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

/// Where a pod sandbox is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodState {
    /// RunPodSandbox is making it; a record found in this state at start-up is the
    /// remains of a crash and is undone.
    Creating,
    /// Namespaces pinned and network set up.
    Ready,
    /// Stopped (or found broken at start-up): namespaces and network released.
    NotReady,
}

/// Paths of a pod's pinned namespaces; `None` where the pod shares the host's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedNamespaces {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
}

impl PinnedNamespaces {
    /// Every pinned path.
    pub fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        self.net
            .iter()
            .chain(self.ipc.iter())
            .chain(self.uts.iter())
    }
}

/// A pod sandbox as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodRecord {
    pub id: String,
    /// The reserved name, `name_namespace_uid_attempt`.
    pub name: String,
    pub state: PodState,
    /// Creation time, nanoseconds since the epoch.
    pub created_at: i64,
    /// The RuntimeClass handler, resolved (never empty).
    pub runtime_handler: String,
    /// The config the kubelet sent, as received.
    pub config: PodSandboxConfig,
    /// The pod's own directory (hostname, hosts, resolv.conf, pinned namespaces).
    pub dir: PathBuf,
    pub namespaces: PinnedNamespaces,
    /// Pod addresses, primary first.
    #[serde(default)]
    pub ips: Vec<String>,
    /// The infra process holding the pod's shared PID namespace, when the pod asked
    /// for one (`namespace_options.pid = POD`).
    #[serde(default)]
    pub infra_pid: Option<u32>,
}

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    /// CreateContainer is making it; found at start-up, it is undone.
    Creating,
    Created,
    Running,
    Exited,
}

/// A container, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub pod_id: String,
    /// The reserved name, `name_podname_podnamespace_poduid_attempt`.
    pub name: String,
    pub state: ContainerState,
    pub created_at: i64,
    #[serde(default)]
    pub started_at: i64,
    #[serde(default)]
    pub finished_at: i64,
    #[serde(default)]
    pub exit_code: i32,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
    /// The config the kubelet sent.
    pub config: k8s_cri::v1::ContainerConfig,
    /// The image as the kubelet named it, and its id.
    pub image: String,
    pub image_ref: String,
    /// Absolute CRI log path, if the pod has a log directory.
    pub log_path: Option<PathBuf>,
    /// OCI bundle (config.json, rootfs, exit record).
    pub bundle: PathBuf,
    /// The shim's socket.
    pub socket: PathBuf,
    /// The OCI runtime binary.
    pub runtime: PathBuf,
    #[serde(default)]
    pub pid: u32,
    /// The image's stop signal ("" for SIGTERM).
    #[serde(default)]
    pub stop_signal: String,
    /// The user the process runs as (resolved in the container's own files).
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    #[serde(default)]
    pub supplemental_groups: Vec<u32>,
}

/// One layer of an image, as pulled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Digest of the blob as the registry serves it (compressed).
    pub digest: String,
    /// Digest of the uncompressed tar.
    pub diff_id: String,
    /// OCI chain id: the snapshot key of this layer and those below it.
    pub chain_id: String,
    /// Compressed size.
    pub size: u64,
    pub media_type: String,
}

/// An image, as stored. Its id is the config digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub id: String,
    /// `registry/repo:tag` references that point here.
    pub repo_tags: Vec<String>,
    /// `registry/repo@sha256:...` references that point here.
    pub repo_digests: Vec<String>,
    /// Digest of the platform manifest.
    pub manifest_digest: String,
    pub layers: Vec<LayerRecord>,
    /// Bytes of the image as distributed (config plus compressed layers).
    pub size: u64,
    /// Pulled at, nanoseconds since the epoch.
    pub pulled_at: i64,
}

impl ImageRecord {
    /// Every reference of this image (tags, then digests).
    pub fn refs(&self) -> impl Iterator<Item = &String> {
        self.repo_tags.iter().chain(self.repo_digests.iter())
    }
}

/// The metadata store. Cheap to clone; all methods block on disk I/O, so async
/// callers run them on the blocking pool.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
}

/// The outcome of reserving a pod name.
#[derive(Debug, PartialEq, Eq)]
pub enum Reserve {
    Done,
    /// The name belongs to this existing pod.
    Taken(String),
}

impl Store {
    /// Opens (or creates) the store at `path` and its tables.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err = |e: &dyn std::fmt::Display| StoreError::Open {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let db = Database::create(path).map_err(|e| open_err(&e))?;
        let txn = db.begin_write().map_err(|e| open_err(&e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| open_err(&e))?;
            let existing = meta
                .get("schema_version")
                .map_err(|e| open_err(&e))?
                .map(|v| v.value().to_string());
            match existing {
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION)
                        .map_err(|e| open_err(&e))?;
                }
                Some(v) if v == SCHEMA_VERSION => {}
                Some(v) => {
                    return Err(open_err(&format!(
                        "schema version {v} is not supported (this criusd reads {SCHEMA_VERSION})"
                    )));
                }
            }
            txn.open_table(PODS).map_err(|e| open_err(&e))?;
            txn.open_table(POD_NAMES).map_err(|e| open_err(&e))?;
            txn.open_table(IMAGES).map_err(|e| open_err(&e))?;
            txn.open_table(IMAGE_REFS).map_err(|e| open_err(&e))?;
            txn.open_table(IP_LEASES).map_err(|e| open_err(&e))?;
            txn.open_table(CONTAINERS).map_err(|e| open_err(&e))?;
            txn.open_table(CONTAINER_NAMES).map_err(|e| open_err(&e))?;
        }
        txn.commit().map_err(|e| open_err(&e))?;
        Ok(Store { db: Arc::new(db) })
    }

    /// Writes a new pod and reserves its name, unless the name is taken.
    pub fn insert_pod(&self, pod: &PodRecord) -> Result<Reserve, StoreError> {
        let value = serde_json::to_vec(pod).map_err(db_err)?;
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut names = txn.open_table(POD_NAMES).map_err(db_err)?;
            if let Some(existing) = names.get(pod.name.as_str()).map_err(db_err)? {
                return Ok(Reserve::Taken(existing.value().to_string()));
            }
            names
                .insert(pod.name.as_str(), pod.id.as_str())
                .map_err(db_err)?;
            let mut pods = txn.open_table(PODS).map_err(db_err)?;
            pods.insert(pod.id.as_str(), value.as_slice())
                .map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        Ok(Reserve::Done)
    }

    /// Replaces an existing pod's record.
    pub fn update_pod(&self, pod: &PodRecord) -> Result<(), StoreError> {
        let value = serde_json::to_vec(pod).map_err(db_err)?;
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut pods = txn.open_table(PODS).map_err(db_err)?;
            pods.insert(pod.id.as_str(), value.as_slice())
                .map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    /// Deletes a pod and frees its name. Deleting a missing pod is not an error.
    pub fn delete_pod(&self, id: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut pods = txn.open_table(PODS).map_err(db_err)?;
            let old = pods.remove(id).map_err(db_err)?.map(|v| v.value().to_vec());
            if let Some(old) = old {
                let mut names = txn.open_table(POD_NAMES).map_err(db_err)?;
                match serde_json::from_slice::<PodRecord>(&old) {
                    Ok(rec) => {
                        names.remove(rec.name.as_str()).map_err(db_err)?;
                    }
                    Err(_) => {
                        // A record we cannot read: drop every name that points at it.
                        let stale: Vec<String> = names
                            .iter()
                            .map_err(db_err)?
                            .filter_map(|e| e.ok())
                            .filter(|(_, v)| v.value() == id)
                            .map(|(k, _)| k.value().to_string())
                            .collect();
                        for name in stale {
                            names.remove(name.as_str()).map_err(db_err)?;
                        }
                    }
                }
            }
        }
        txn.commit().map_err(db_err)
    }

    /// One pod by exact id.
    pub fn pod(&self, id: &str) -> Result<Option<PodRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let pods = txn.open_table(PODS).map_err(db_err)?;
        match pods.get(id).map_err(db_err)? {
            None => Ok(None),
            Some(v) => decode(id, v.value()).map(Some),
        }
    }

    /// Every pod.
    pub fn pods(&self) -> Result<Vec<PodRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let pods = txn.open_table(PODS).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in pods.iter().map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            out.push(decode(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// The id of the pod holding a reserved name.
    pub fn pod_id_by_name(&self, name: &str) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let names = txn.open_table(POD_NAMES).map_err(db_err)?;
        Ok(names
            .get(name)
            .map_err(db_err)?
            .map(|v| v.value().to_string()))
    }
}

impl Store {
    /// Writes an image and points each of its references at it. A reference that
    /// pointed at another image moves here (that image keeps its other references).
    pub fn put_image(&self, image: &ImageRecord) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut images = txn.open_table(IMAGES).map_err(db_err)?;
            let mut refs = txn.open_table(IMAGE_REFS).map_err(db_err)?;
            for r in image.refs() {
                let previous = refs
                    .insert(r.as_str(), image.id.as_str())
                    .map_err(db_err)?
                    .map(|v| v.value().to_string());
                if let Some(prev) = previous.filter(|p| *p != image.id) {
                    let old = images
                        .get(prev.as_str())
                        .map_err(db_err)?
                        .map(|v| v.value().to_vec());
                    if let Some(old) = old {
                        let mut old: ImageRecord = decode(&prev, &old)?;
                        old.repo_tags.retain(|t| t != r);
                        old.repo_digests.retain(|t| t != r);
                        let bytes = serde_json::to_vec(&old).map_err(db_err)?;
                        images
                            .insert(prev.as_str(), bytes.as_slice())
                            .map_err(db_err)?;
                    }
                }
            }
            let bytes = serde_json::to_vec(image).map_err(db_err)?;
            images
                .insert(image.id.as_str(), bytes.as_slice())
                .map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    /// One image by id.
    pub fn image(&self, id: &str) -> Result<Option<ImageRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let images = txn.open_table(IMAGES).map_err(db_err)?;
        match images.get(id).map_err(db_err)? {
            None => Ok(None),
            Some(v) => decode(id, v.value()).map(Some),
        }
    }

    /// Every image.
    pub fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let images = txn.open_table(IMAGES).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in images.iter().map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            out.push(decode(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// The image a tag or digest reference points at.
    pub fn image_id_by_ref(&self, reference: &str) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let refs = txn.open_table(IMAGE_REFS).map_err(db_err)?;
        Ok(refs
            .get(reference)
            .map_err(db_err)?
            .map(|v| v.value().to_string()))
    }

    /// Removes one reference from its image. Returns the image as it is afterwards.
    pub fn remove_image_ref(&self, reference: &str) -> Result<Option<ImageRecord>, StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let result;
        {
            let mut refs = txn.open_table(IMAGE_REFS).map_err(db_err)?;
            let Some(id) = refs
                .remove(reference)
                .map_err(db_err)?
                .map(|v| v.value().to_string())
            else {
                return Ok(None);
            };
            let mut images = txn.open_table(IMAGES).map_err(db_err)?;
            let old = images
                .get(id.as_str())
                .map_err(db_err)?
                .map(|v| v.value().to_vec());
            result = match old {
                Some(old) => {
                    let mut img: ImageRecord = decode(&id, &old)?;
                    img.repo_tags.retain(|t| t != reference);
                    img.repo_digests.retain(|t| t != reference);
                    let bytes = serde_json::to_vec(&img).map_err(db_err)?;
                    images
                        .insert(id.as_str(), bytes.as_slice())
                        .map_err(db_err)?;
                    Some(img)
                }
                None => None,
            };
        }
        txn.commit().map_err(db_err)?;
        Ok(result)
    }

    /// Deletes an image and every reference to it.
    pub fn delete_image(&self, id: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut images = txn.open_table(IMAGES).map_err(db_err)?;
            let old = images
                .remove(id)
                .map_err(db_err)?
                .map(|v| v.value().to_vec());
            let mut refs = txn.open_table(IMAGE_REFS).map_err(db_err)?;
            if let Some(old) = old {
                if let Ok(img) = decode::<ImageRecord>(id, &old) {
                    for r in img.refs() {
                        if refs
                            .get(r.as_str())
                            .map_err(db_err)?
                            .is_some_and(|v| v.value() == id)
                        {
                            refs.remove(r.as_str()).map_err(db_err)?;
                        }
                    }
                }
            }
        }
        txn.commit().map_err(db_err)
    }
}

impl Store {
    /// Writes a new container and reserves its name, unless the name is taken.
    pub fn insert_container(&self, c: &ContainerRecord) -> Result<Reserve, StoreError> {
        let value = serde_json::to_vec(c).map_err(db_err)?;
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut names = txn.open_table(CONTAINER_NAMES).map_err(db_err)?;
            if let Some(existing) = names.get(c.name.as_str()).map_err(db_err)? {
                return Ok(Reserve::Taken(existing.value().to_string()));
            }
            names
                .insert(c.name.as_str(), c.id.as_str())
                .map_err(db_err)?;
            let mut t = txn.open_table(CONTAINERS).map_err(db_err)?;
            t.insert(c.id.as_str(), value.as_slice()).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        Ok(Reserve::Done)
    }

    /// Replaces a container's record.
    pub fn update_container(&self, c: &ContainerRecord) -> Result<(), StoreError> {
        let value = serde_json::to_vec(c).map_err(db_err)?;
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = txn.open_table(CONTAINERS).map_err(db_err)?;
            t.insert(c.id.as_str(), value.as_slice()).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    /// Deletes a container and frees its name; missing is fine.
    pub fn delete_container(&self, id: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = txn.open_table(CONTAINERS).map_err(db_err)?;
            let old = t.remove(id).map_err(db_err)?.map(|v| v.value().to_vec());
            let mut names = txn.open_table(CONTAINER_NAMES).map_err(db_err)?;
            if let Some(old) = old {
                if let Ok(c) = decode::<ContainerRecord>(id, &old) {
                    names.remove(c.name.as_str()).map_err(db_err)?;
                }
            }
        }
        txn.commit().map_err(db_err)
    }

    /// The id of the container holding a reserved name.
    pub fn container_id_by_name(&self, name: &str) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let names = txn.open_table(CONTAINER_NAMES).map_err(db_err)?;
        Ok(names
            .get(name)
            .map_err(db_err)?
            .map(|v| v.value().to_string()))
    }

    /// One container by exact id.
    pub fn container(&self, id: &str) -> Result<Option<ContainerRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(CONTAINERS).map_err(db_err)?;
        match t.get(id).map_err(db_err)? {
            None => Ok(None),
            Some(v) => decode(id, v.value()).map(Some),
        }
    }

    /// Every container.
    pub fn containers(&self) -> Result<Vec<ContainerRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(CONTAINERS).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            out.push(decode(k.value(), v.value())?);
        }
        Ok(out)
    }
}

const SEP: char = '\x1f';

fn family_str(f: IpFamily) -> &'static str {
    match f {
        IpFamily::V4 => "v4",
        IpFamily::V6 => "v6",
    }
}

fn lease_key(network: &str, family: IpFamily, pod_id: &str) -> String {
    format!("{network}{SEP}{}{SEP}{pod_id}", family_str(family))
}

fn lease_err(e: impl std::fmt::Display) -> LeaseStoreError {
    LeaseStoreError::Backend(e.to_string())
}

fn parse_lease(key: &str, value: &str) -> Option<Lease> {
    let mut parts = key.split(SEP);
    let network = parts.next()?.to_string();
    let family = match parts.next()? {
        "v4" => IpFamily::V4,
        "v6" => IpFamily::V6,
        _ => return None,
    };
    let pod_id = parts.next()?.to_string();
    Some(Lease {
        network,
        pod_id,
        family,
        address: value.parse().ok()?,
    })
}

fn leases_of(
    table: &impl ReadableTable<&'static str, &'static str>,
    network: &str,
) -> Result<Vec<Lease>, LeaseStoreError> {
    let prefix = format!("{network}{SEP}");
    let mut out = Vec::new();
    for entry in table.range(prefix.as_str()..).map_err(lease_err)? {
        let (k, v) = entry.map_err(lease_err)?;
        if !k.value().starts_with(&prefix) {
            break;
        }
        if let Some(l) = parse_lease(k.value(), v.value()) {
            out.push(l);
        }
    }
    Ok(out)
}

/// The pod network's IP leases live in the same database as the pods, so a lease and
/// the pod it belongs to are recovered together after a crash.
impl LeaseStore for Store {
    fn list(&self, network: &str) -> Result<Vec<Lease>, LeaseStoreError> {
        let txn = self.db.begin_read().map_err(lease_err)?;
        let table = txn.open_table(IP_LEASES).map_err(lease_err)?;
        leases_of(&table, network)
    }

    fn insert(&self, lease: &Lease) -> Result<(), LeaseStoreError> {
        let txn = self.db.begin_write().map_err(lease_err)?;
        {
            let mut table = txn.open_table(IP_LEASES).map_err(lease_err)?;
            let key = lease_key(&lease.network, lease.family, &lease.pod_id);
            if table.get(key.as_str()).map_err(lease_err)?.is_some() {
                return Err(LeaseStoreError::AlreadyLeased {
                    network: lease.network.clone(),
                    pod_id: lease.pod_id.clone(),
                    family: lease.family,
                });
            }
            if leases_of(&table, &lease.network)?
                .iter()
                .any(|l| l.address == lease.address)
            {
                return Err(LeaseStoreError::AddressTaken(lease.address));
            }
            let addr = lease.address.to_string();
            table
                .insert(key.as_str(), addr.as_str())
                .map_err(lease_err)?;
        }
        txn.commit().map_err(lease_err)
    }

    fn remove(
        &self,
        network: &str,
        pod_id: &str,
        family: IpFamily,
    ) -> Result<Option<Lease>, LeaseStoreError> {
        let txn = self.db.begin_write().map_err(lease_err)?;
        let removed;
        {
            let mut table = txn.open_table(IP_LEASES).map_err(lease_err)?;
            let key = lease_key(network, family, pod_id);
            removed = table
                .remove(key.as_str())
                .map_err(lease_err)?
                .and_then(|v| parse_lease(&key, v.value()));
        }
        txn.commit().map_err(lease_err)?;
        Ok(removed)
    }
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: key.to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, name: &str) -> PodRecord {
        PodRecord {
            id: id.into(),
            name: name.into(),
            state: PodState::Creating,
            created_at: 1,
            runtime_handler: "runc".into(),
            config: PodSandboxConfig::default(),
            dir: PathBuf::from("/x"),
            namespaces: PinnedNamespaces::default(),
            ips: vec![],
            infra_pid: None,
        }
    }

    #[test]
    fn names_are_reserved_once_and_freed_on_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        assert_eq!(store.insert_pod(&record("a", "n")).unwrap(), Reserve::Done);
        assert_eq!(
            store.insert_pod(&record("b", "n")).unwrap(),
            Reserve::Taken("a".into())
        );
        assert!(store.pod("b").unwrap().is_none());
        let mut a = store.pod("a").unwrap().unwrap();
        a.state = PodState::Ready;
        store.update_pod(&a).unwrap();
        assert_eq!(store.pods().unwrap()[0].state, PodState::Ready);
        store.delete_pod("a").unwrap();
        store.delete_pod("a").unwrap();
        assert!(store.pod_id_by_name("n").unwrap().is_none());
        assert_eq!(store.insert_pod(&record("b", "n")).unwrap(), Reserve::Done);
    }

    fn image(id: &str, tags: &[&str]) -> ImageRecord {
        ImageRecord {
            id: id.into(),
            repo_tags: tags.iter().map(|t| t.to_string()).collect(),
            repo_digests: vec![format!("r@{id}")],
            manifest_digest: "m".into(),
            layers: vec![],
            size: 1,
            pulled_at: 1,
        }
    }

    #[test]
    fn image_refs_move_and_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        store.put_image(&image("a", &["r:1", "r:latest"])).unwrap();
        assert_eq!(
            store.image_id_by_ref("r:latest").unwrap().as_deref(),
            Some("a")
        );
        // The tag moves to a newer image; the old one keeps its other references.
        store.put_image(&image("b", &["r:latest"])).unwrap();
        assert_eq!(
            store.image_id_by_ref("r:latest").unwrap().as_deref(),
            Some("b")
        );
        assert_eq!(store.image("a").unwrap().unwrap().repo_tags, vec!["r:1"]);
        let left = store.remove_image_ref("r:1").unwrap().unwrap();
        assert!(left.repo_tags.is_empty());
        assert_eq!(store.remove_image_ref("r:1").unwrap(), None);
        store.delete_image("a").unwrap();
        assert!(store.image("a").unwrap().is_none());
        assert!(store.image_id_by_ref("r@a").unwrap().is_none());
        assert_eq!(store.images().unwrap().len(), 1);
    }

    #[test]
    fn leases_are_unique_per_pod_family_and_address() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let lease = |pod: &str, addr: &str| Lease {
            network: "crius0".into(),
            pod_id: pod.into(),
            family: IpFamily::V4,
            address: addr.parse().unwrap(),
        };
        store.insert(&lease("a", "10.88.0.2")).unwrap();
        assert!(matches!(
            store.insert(&lease("b", "10.88.0.2")),
            Err(LeaseStoreError::AddressTaken(_))
        ));
        assert!(matches!(
            store.insert(&lease("a", "10.88.0.3")),
            Err(LeaseStoreError::AlreadyLeased { .. })
        ));
        store.insert(&lease("b", "10.88.0.3")).unwrap();
        let other = Lease {
            network: "crius1".into(),
            ..lease("a", "10.88.0.2")
        };
        store.insert(&other).unwrap();
        assert_eq!(LeaseStore::list(&store, "crius0").unwrap().len(), 2);
        assert_eq!(LeaseStore::list(&store, "crius1").unwrap(), vec![other]);
        assert_eq!(
            store.remove("crius0", "a", IpFamily::V4).unwrap(),
            Some(lease("a", "10.88.0.2"))
        );
        assert_eq!(store.remove("crius0", "a", IpFamily::V4).unwrap(), None);
        assert_eq!(
            LeaseStore::list(&store, "crius0").unwrap(),
            vec![lease("b", "10.88.0.3")]
        );
    }

    #[test]
    fn reopens_with_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let store = Store::open(&path).unwrap();
            store.insert_pod(&record("a", "n")).unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.pod_id_by_name("n").unwrap().as_deref(), Some("a"));
        assert_eq!(store.pods().unwrap().len(), 1);
    }
}
