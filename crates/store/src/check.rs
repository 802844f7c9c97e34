//! `Db::check`: reads every table and reports what breaks the store's invariants —
//! records that no longer decode, and index entries (names, image references, a
//! pod's containers) that disagree with the records.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata, TableHandle};
use serde::de::DeserializeOwned;

use crate::containers::{CONTAINER_NAMES, CONTAINERS, CONTAINERS_BY_POD};
use crate::images::{IMAGE_REFS, IMAGES};
use crate::leases::{IP_LEASES, parse_lease};
use crate::meta::META;
use crate::pods::{POD_NAMES, PODS};
use crate::table::{Index, Named, Records, decode, redb_err};
use crate::{ContainerRecord, Db, ImageRecord, PodRecord, SCHEMA_VERSION, StoreError};

/// How many entries a table holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCount {
    pub table: String,
    pub entries: u64,
}

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A record (or lease) that does not decode.
    Undecodable {
        table: String,
        key: String,
        error: String,
    },
    /// An index entry `key` → `target` that no record backs: the record is missing,
    /// or it does not claim the entry (`why` says which).
    Dangling {
        table: String,
        key: String,
        target: String,
        why: String,
    },
    /// A record (`record`, the id) whose entry `key` in index `table` is missing,
    /// or held by another record (`holder`).
    Unindexed {
        table: String,
        key: String,
        record: String,
        holder: Option<String>,
    },
    /// A table of the schema that the file lacks.
    MissingTable { table: String },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Undecodable { table, key, error } => {
                write!(
                    f,
                    "{table}/{}: does not decode: {error}",
                    key.escape_debug()
                )
            }
            Problem::Dangling {
                table,
                key,
                target,
                why,
            } => write!(f, "{table}: {} -> {target}: {why}", key.escape_debug()),
            Problem::Unindexed {
                table,
                key,
                record,
                holder: None,
            } => write!(f, "{table}: no entry {} for {record}", key.escape_debug()),
            Problem::Unindexed {
                table,
                key,
                record,
                holder: Some(holder),
            } => write!(
                f,
                "{table}: {} belongs to {holder}, not to {record}",
                key.escape_debug()
            ),
            Problem::MissingTable { table } => write!(f, "table {table} is missing"),
        }
    }
}

/// What [`Db::check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    pub path: PathBuf,
    /// The version the file records.
    pub schema_version: u32,
    /// Entries per table, in schema order.
    pub tables: Vec<TableCount>,
    pub problems: Vec<Problem>,
}

impl CheckReport {
    /// Whether the store keeps every invariant.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// Whether criusd will migrate the store when it next opens it.
    pub fn migration_pending(&self) -> bool {
        self.schema_version < SCHEMA_VERSION
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "metadata store {}", self.path.display())?;
        write!(f, "schema version {}", self.schema_version)?;
        if self.migration_pending() {
            writeln!(
                f,
                " (criusd migrates it to version {SCHEMA_VERSION} when it next starts)"
            )?;
        } else {
            writeln!(f)?;
        }
        for t in &self.tables {
            writeln!(f, "  {:<18} {:>8}", t.table, t.entries)?;
        }
        match self.problems.len() {
            0 => writeln!(f, "no problems"),
            n => {
                writeln!(f, "{n} problem{}:", if n == 1 { "" } else { "s" })?;
                for p in &self.problems {
                    writeln!(f, "  {p}")?;
                }
                Ok(())
            }
        }
    }
}

/// A records table as read: what decodes, and the keys of what does not.
pub(crate) struct Loaded<T> {
    pub(crate) good: BTreeMap<String, T>,
    pub(crate) bad: BTreeSet<String>,
}

/// Reads every record of `def`; `None` when the table is missing.
pub(crate) fn load<T: DeserializeOwned>(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    def: Records,
    problems: &mut Vec<Problem>,
) -> Result<Loaded<T>, StoreError> {
    let op = "reading records";
    let mut out = Loaded {
        good: BTreeMap::new(),
        bad: BTreeSet::new(),
    };
    for entry in t.iter().map_err(redb_err(op))? {
        let (k, v) = entry.map_err(redb_err(op))?;
        let key = k.value().to_string();
        match decode::<T>(def.name(), &key, v.value()) {
            Ok(rec) => {
                out.good.insert(key, rec);
            }
            Err(e) => {
                problems.push(Problem::Undecodable {
                    table: def.name().to_string(),
                    key: key.clone(),
                    error: std::error::Error::source(&e)
                        .map_or_else(|| e.to_string(), |s| s.to_string()),
                });
                out.bad.insert(key);
            }
        }
    }
    Ok(out)
}

/// Every entry of a string index.
pub(crate) fn entries(
    t: &impl ReadableTable<&'static str, &'static str>,
) -> Result<BTreeMap<String, String>, StoreError> {
    let op = "reading an index";
    let mut out = BTreeMap::new();
    for entry in t.iter().map_err(redb_err(op))? {
        let (k, v) = entry.map_err(redb_err(op))?;
        out.insert(k.value().to_string(), v.value().to_string());
    }
    Ok(out)
}

/// What an index is checked against: the keys each record should be found under,
/// and why a key's record does not list it.
struct Keys<'a, T> {
    table: Index,
    /// What a record is, for "no such ...".
    kind: &'a str,
    of: fn(&T) -> Vec<&str>,
    unlisted: fn(&str, &T) -> String,
}

/// The problems of a name index against its records.
fn check_names<T: Named>(
    names_table: Index,
    kind: &str,
    names: &BTreeMap<String, String>,
    records: &Loaded<T>,
    problems: &mut Vec<Problem>,
) {
    let keys = Keys {
        table: names_table,
        kind,
        of: |rec: &T| vec![rec.name()],
        unlisted: |_, rec: &T| format!("its record is named {}", rec.name()),
    };
    check_index(&keys, names, records, problems);
}

/// The problems of `image_refs` against the image records.
fn check_refs(
    refs: &BTreeMap<String, String>,
    images: &Loaded<ImageRecord>,
    problems: &mut Vec<Problem>,
) {
    let keys = Keys {
        table: IMAGE_REFS,
        kind: "image",
        of: |img: &ImageRecord| img.refs().map(String::as_str).collect(),
        unlisted: |id, _| format!("image {id} does not list it"),
    };
    check_index(&keys, refs, images, problems);
}

/// Every entry of `index` must point at a record that lists its key, and every key a
/// record lists must point at that record.
fn check_index<T>(
    keys: &Keys<'_, T>,
    index: &BTreeMap<String, String>,
    records: &Loaded<T>,
    problems: &mut Vec<Problem>,
) {
    let table = keys.table.name().to_string();
    for (key, id) in index {
        let why = match records.good.get(id) {
            Some(rec) if (keys.of)(rec).contains(&key.as_str()) => continue,
            Some(rec) => (keys.unlisted)(id, rec),
            // Reported as undecodable already; a repair removes both.
            None if records.bad.contains(id) => continue,
            None => format!("no such {}", keys.kind),
        };
        problems.push(Problem::Dangling {
            table: table.clone(),
            key: key.clone(),
            target: id.clone(),
            why,
        });
    }
    for (id, rec) in &records.good {
        for key in (keys.of)(rec) {
            let holder = index.get(key);
            if holder != Some(id) {
                problems.push(Problem::Unindexed {
                    table: table.clone(),
                    key: key.to_string(),
                    record: id.clone(),
                    holder: holder.cloned(),
                });
            }
        }
    }
}

/// The problems of `containers_by_pod` against the container records.
fn check_by_pod(
    by_pod: &BTreeSet<(String, String)>,
    containers: &Loaded<ContainerRecord>,
    problems: &mut Vec<Problem>,
) {
    let table = CONTAINERS_BY_POD.name().to_string();
    for (pod, id) in by_pod {
        let why = match containers.good.get(id) {
            Some(c) if c.pod_id == *pod => continue,
            Some(c) => format!("the container belongs to pod {}", c.pod_id),
            None if containers.bad.contains(id) => continue,
            None => "no such container".to_string(),
        };
        problems.push(Problem::Dangling {
            table: table.clone(),
            key: format!("{pod}/{id}"),
            target: id.clone(),
            why,
        });
    }
    for (id, c) in &containers.good {
        if !by_pod.contains(&(c.pod_id.clone(), id.clone())) {
            problems.push(Problem::Unindexed {
                table: table.clone(),
                key: format!("{}/{id}", c.pod_id),
                record: id.clone(),
                holder: None,
            });
        }
    }
}

/// Every entry of `containers_by_pod`.
pub(crate) fn by_pod_entries(
    t: &impl ReadableTable<(&'static str, &'static str), ()>,
) -> Result<BTreeSet<(String, String)>, StoreError> {
    let op = "reading containers_by_pod";
    let mut out = BTreeSet::new();
    for entry in t.iter().map_err(redb_err(op))? {
        let (k, _) = entry.map_err(redb_err(op))?;
        let (pod, id) = k.value();
        out.insert((pod.to_string(), id.to_string()));
    }
    Ok(out)
}

/// Opens a table for the check: a missing one is a problem (and counted empty).
macro_rules! open_or_note {
    ($txn:expr, $def:expr, $report:expr) => {
        match $txn.open_table($def) {
            Ok(t) => {
                let entries = t.len().map_err(redb_err("counting entries"))?;
                $report.tables.push(TableCount {
                    table: $def.name().to_string(),
                    entries,
                });
                Some(t)
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {
                $report.problems.push(Problem::MissingTable {
                    table: $def.name().to_string(),
                });
                None
            }
            Err(e) => return Err(redb_err("opening a table")(e)),
        }
    };
}

fn check_txn(txn: &ReadTransaction, report: &mut CheckReport) -> Result<(), StoreError> {
    let mut problems = Vec::new();
    open_or_note!(txn, META, report);
    let pods = match open_or_note!(txn, PODS, report) {
        Some(t) => load::<PodRecord>(&t, PODS, &mut problems)?,
        None => Loaded::empty(),
    };
    if let Some(t) = open_or_note!(txn, POD_NAMES, report) {
        check_names(POD_NAMES, "pod", &entries(&t)?, &pods, &mut problems);
    }
    let containers = match open_or_note!(txn, CONTAINERS, report) {
        Some(t) => load::<ContainerRecord>(&t, CONTAINERS, &mut problems)?,
        None => Loaded::empty(),
    };
    if let Some(t) = open_or_note!(txn, CONTAINER_NAMES, report) {
        let names = entries(&t)?;
        check_names(
            CONTAINER_NAMES,
            "container",
            &names,
            &containers,
            &mut problems,
        );
    }
    // Version 2 on: a version-1 store gets its index when it is migrated.
    if report.schema_version >= 2 {
        if let Some(t) = open_or_note!(txn, CONTAINERS_BY_POD, report) {
            check_by_pod(&by_pod_entries(&t)?, &containers, &mut problems);
        }
    }
    let images = match open_or_note!(txn, IMAGES, report) {
        Some(t) => load::<ImageRecord>(&t, IMAGES, &mut problems)?,
        None => Loaded::empty(),
    };
    if let Some(t) = open_or_note!(txn, IMAGE_REFS, report) {
        check_refs(&entries(&t)?, &images, &mut problems);
    }
    if let Some(t) = open_or_note!(txn, IP_LEASES, report) {
        for (key, value) in entries(&t)? {
            if parse_lease(&key, &value).is_none() {
                problems.push(Problem::Undecodable {
                    table: IP_LEASES.name().to_string(),
                    error: format!("not a lease (address {value:?})"),
                    key,
                });
            }
        }
    }
    report.problems.extend(problems);
    Ok(())
}

impl<T> Loaded<T> {
    pub(crate) fn empty() -> Loaded<T> {
        Loaded {
            good: BTreeMap::new(),
            bad: BTreeSet::new(),
        }
    }
}

impl Db {
    /// Checks every table in one read transaction: the schema version, entries per
    /// table, records that do not decode, names and references pointing at missing
    /// records or at records that do not claim them, records whose name or reference
    /// is not theirs, and `containers_by_pod` against the containers. Changes
    /// nothing.
    pub fn check(&self) -> Result<CheckReport, StoreError> {
        let schema_version = self.schema_version()?.unwrap_or(0);
        self.read("checking the store", |txn| {
            let mut report = CheckReport {
                path: self.path().to_path_buf(),
                schema_version,
                tables: Vec::new(),
                problems: Vec::new(),
            };
            check_txn(txn, &mut report)?;
            Ok(report)
        })
    }
}
