//! `Db::repair`: after a backup copy of the file, removes records that no longer
//! decode and rebuilds every index from the records, in one write transaction.
//!
//! What a rebuild decides, where records disagree with each other:
//! - Two records claiming one name: the one the old index pointed at keeps it (else
//!   the first by id); the other record is removed (a name is the record's identity
//!   to the kubelet, and two cannot be served).
//! - Two images listing one reference: the one the old index pointed at keeps it
//!   (else the first by id); the other image's record drops the reference.
//! - Leases that do not parse are removed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{TableHandle, WriteTransaction};
use serde::de::DeserializeOwned;

use crate::check::{CheckReport, Loaded, Problem, by_pod_entries, entries, load};
use crate::containers::{CONTAINER_NAMES, CONTAINERS, CONTAINERS_BY_POD};
use crate::images::{IMAGE_REFS, IMAGES, edit_image};
use crate::leases::{IP_LEASES, parse_lease};
use crate::meta;
use crate::pods::{POD_NAMES, PODS};
use crate::table::{Index, Named, Records, redb_err};
use crate::{ContainerRecord, Db, ImageRecord, PodRecord, SCHEMA_VERSION, StoreError};

/// One change a repair made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub table: String,
    pub key: String,
    pub what: String,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}: {}",
            self.table,
            self.key.escape_debug(),
            self.what
        )
    }
}

/// What [`Db::repair`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairReport {
    /// The copy of the file taken before any change; `None` when nothing needed
    /// repair (and nothing was changed).
    pub backup: Option<PathBuf>,
    /// The version the store was migrated from, when it was older.
    pub migrated_from: Option<u32>,
    /// What the check found before the repair.
    pub found: Vec<Problem>,
    /// What the repair changed.
    pub actions: Vec<Action>,
    /// The check after the repair.
    pub after: CheckReport,
}

impl fmt::Display for RepairReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(backup) = &self.backup else {
            writeln!(f, "nothing to repair")?;
            return write!(f, "{}", self.after);
        };
        writeln!(f, "backup copy: {}", backup.display())?;
        if let Some(from) = self.migrated_from {
            writeln!(f, "migrated from schema version {from} to {SCHEMA_VERSION}")?;
        }
        if self.found.is_empty() {
            writeln!(f, "found no problems")?;
        } else {
            writeln!(f, "found {} problem(s):", self.found.len())?;
            for p in &self.found {
                writeln!(f, "  {p}")?;
            }
        }
        if self.actions.is_empty() {
            writeln!(f, "changed no record or index")?;
        } else {
            writeln!(f, "changed:")?;
            for a in &self.actions {
                writeln!(f, "  {a}")?;
            }
        }
        writeln!(f, "after the repair:")?;
        write!(f, "{}", self.after)
    }
}

fn action(table: &str, key: &str, what: impl Into<String>) -> Action {
    Action {
        table: table.to_string(),
        key: key.to_string(),
        what: what.into(),
    }
}

/// The action of rebuilding an index table from the records.
fn rebuilt(table: &str, entries: usize, was: usize) -> Action {
    action(
        table,
        "*",
        format!("rebuilt from the records: {entries} entries (was {was})"),
    )
}

/// Removes the records of `def` that do not decode; returns those that do.
fn purge<T: DeserializeOwned>(
    txn: &WriteTransaction,
    def: Records,
    actions: &mut Vec<Action>,
) -> Result<Loaded<T>, StoreError> {
    let op = "removing records that do not decode";
    let mut t = txn.open_table(def).map_err(redb_err(op))?;
    let loaded = load::<T>(&t, def, &mut Vec::new())?;
    for key in &loaded.bad {
        t.remove(key.as_str()).map_err(redb_err(op))?;
        actions.push(action(def.name(), key, "removed: does not decode"));
    }
    Ok(loaded)
}

/// Empties a table (by deleting and recreating it).
fn clear(txn: &WriteTransaction, def: impl TableHandle + Copy) -> Result<(), StoreError> {
    txn.delete_table(def)
        .map_err(redb_err("clearing an index"))?;
    Ok(())
}

/// Rebuilds a name index from its records; removes a record whose name another
/// keeps. Returns the records that stay.
fn rebuild_names<T: Named>(
    txn: &WriteTransaction,
    (records, names): (Records, Index),
    mut loaded: Loaded<T>,
    actions: &mut Vec<Action>,
) -> Result<BTreeMap<String, T>, StoreError> {
    let op = "rebuilding a name index";
    let old = entries(&txn.open_table(names).map_err(redb_err(op))?)?;
    let mut new: BTreeMap<String, String> = BTreeMap::new();
    // The holders the old index agrees with first, then the rest by id.
    let (agreed, rest): (Vec<_>, Vec<_>) = loaded
        .good
        .iter()
        .partition(|(id, rec)| old.get(rec.name()) == Some(*id));
    let mut losers = Vec::new();
    for (id, rec) in agreed.into_iter().chain(rest) {
        match new.get(rec.name()) {
            None => {
                new.insert(rec.name().to_string(), id.clone());
            }
            Some(holder) => losers.push((id.clone(), holder.clone())),
        }
    }
    let mut t = txn.open_table(records).map_err(redb_err(op))?;
    for (id, holder) in losers {
        t.remove(id.as_str()).map_err(redb_err(op))?;
        if let Some(rec) = loaded.good.remove(&id) {
            actions.push(action(
                records.name(),
                &id,
                format!("removed: its name {} is {holder}'s", rec.name()),
            ));
        }
    }
    write_index(txn, names, &old, &new, actions)?;
    Ok(loaded.good)
}

/// Replaces a string index with `new`, noting the change.
fn write_index(
    txn: &WriteTransaction,
    def: Index,
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
    actions: &mut Vec<Action>,
) -> Result<(), StoreError> {
    if old == new {
        return Ok(());
    }
    let op = "writing a rebuilt index";
    clear(txn, def)?;
    let mut t = txn.open_table(def).map_err(redb_err(op))?;
    for (k, v) in new {
        t.insert(k.as_str(), v.as_str()).map_err(redb_err(op))?;
    }
    actions.push(rebuilt(def.name(), new.len(), old.len()));
    Ok(())
}

fn repair_containers(txn: &WriteTransaction, actions: &mut Vec<Action>) -> Result<(), StoreError> {
    let op = "rebuilding containers_by_pod";
    let loaded = purge::<ContainerRecord>(txn, CONTAINERS, actions)?;
    let containers = rebuild_names(txn, (CONTAINERS, CONTAINER_NAMES), loaded, actions)?;
    let old = by_pod_entries(&txn.open_table(CONTAINERS_BY_POD).map_err(redb_err(op))?)?;
    let new: BTreeSet<(String, String)> = containers
        .iter()
        .map(|(id, c)| (c.pod_id.clone(), id.clone()))
        .collect();
    if old != new {
        clear(txn, CONTAINERS_BY_POD)?;
        let mut t = txn.open_table(CONTAINERS_BY_POD).map_err(redb_err(op))?;
        for (pod, id) in &new {
            t.insert((pod.as_str(), id.as_str()), ())
                .map_err(redb_err(op))?;
        }
        actions.push(rebuilt(CONTAINERS_BY_POD.name(), new.len(), old.len()));
    }
    Ok(())
}

fn repair_images(txn: &WriteTransaction, actions: &mut Vec<Action>) -> Result<(), StoreError> {
    let op = "rebuilding image_refs";
    let images = purge::<ImageRecord>(txn, IMAGES, actions)?;
    let old = entries(&txn.open_table(IMAGE_REFS).map_err(redb_err(op))?)?;
    let mut new: BTreeMap<String, String> = BTreeMap::new();
    let mut dropped: Vec<(String, String, String)> = Vec::new();
    let claims = images
        .good
        .iter()
        .flat_map(|(id, img)| img.refs().map(move |r| (r.clone(), id.clone())));
    let (agreed, rest): (Vec<_>, Vec<_>) = claims.partition(|(r, id)| old.get(r) == Some(id));
    for (reference, id) in agreed.into_iter().chain(rest) {
        match new.get(&reference) {
            None => {
                new.insert(reference, id);
            }
            Some(holder) => dropped.push((id, reference, holder.clone())),
        }
    }
    let mut t = txn.open_table(IMAGES).map_err(redb_err(op))?;
    for (id, reference, holder) in dropped {
        edit_image(&mut t, &id, |img| img.drop_ref(&reference))?;
        actions.push(action(
            IMAGES.name(),
            &id,
            format!("dropped reference {reference}: it is {holder}'s"),
        ));
    }
    drop(t);
    write_index(txn, IMAGE_REFS, &old, &new, actions)
}

fn repair_leases(txn: &WriteTransaction, actions: &mut Vec<Action>) -> Result<(), StoreError> {
    let op = "removing leases that do not parse";
    let mut t = txn.open_table(IP_LEASES).map_err(redb_err(op))?;
    for (key, value) in entries(&t)? {
        if parse_lease(&key, &value).is_none() {
            t.remove(key.as_str()).map_err(redb_err(op))?;
            actions.push(action(IP_LEASES.name(), &key, "removed: not a lease"));
        }
    }
    Ok(())
}

/// Every repair, in one transaction.
fn repair_txn(txn: &WriteTransaction) -> Result<Vec<Action>, StoreError> {
    let mut actions = Vec::new();
    meta::create_tables(txn)?;
    let pods = purge::<PodRecord>(txn, PODS, &mut actions)?;
    rebuild_names(txn, (PODS, POD_NAMES), pods, &mut actions)?;
    repair_containers(txn, &mut actions)?;
    repair_images(txn, &mut actions)?;
    repair_leases(txn, &mut actions)?;
    Ok(actions)
}

/// `YYYYMMDDTHHMMSSZ` of a time (UTC).
fn utc_stamp(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (mut days, rest) = (secs / 86_400, secs % 86_400);
    let leap = |y: u64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let mut year = 1970;
    loop {
        let len = if leap(year) { 366 } else { 365 };
        if days < len {
            break;
        }
        days -= len;
        year += 1;
    }
    let feb = if leap(year) { 29 } else { 28 };
    let mut month = 1;
    for len in [31, feb, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31] {
        if days < len {
            break;
        }
        days -= len;
        month += 1;
    }
    format!(
        "{year:04}{month:02}{:02}T{:02}{:02}{:02}Z",
        days + 1,
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// Copies `from` to a new file `to` (never replacing one) and syncs it.
fn copy_new(from: &Path, to: &Path) -> std::io::Result<()> {
    let mut src = std::fs::File::open(from)?;
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)?;
    let copied = std::io::copy(&mut src, &mut dst).and_then(|_| {
        dst.flush()?;
        dst.sync_all()
    });
    if copied.is_err() {
        let _ = std::fs::remove_file(to);
    }
    copied
}

impl Db {
    /// Writes a copy of the file next to it, `<name>.bak-<UTC time>` (with `-N`
    /// added should that exist), while no transaction runs. The copy opens like the
    /// store after a crash: at its last commit.
    pub fn backup(&self) -> Result<PathBuf, StoreError> {
        let name = self
            .path()
            .file_name()
            .map_or_else(|| "store.redb".into(), |n| n.to_string_lossy().into_owned());
        let base = format!("{name}.bak-{}", utc_stamp(SystemTime::now()));
        // Held for the copy: no transaction of this handle runs meanwhile (and redb's
        // lock keeps other processes out).
        let _idle = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut n = 0;
        loop {
            let file = if n == 0 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            let to = self.path().with_file_name(file);
            match copy_new(self.path(), &to) {
                Ok(()) => {
                    if let Some(dir) = to.parent() {
                        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
                    }
                    return Ok(to);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
                Err(source) => return Err(StoreError::Backup { path: to, source }),
            }
        }
    }

    /// Checks the store and, when anything is wrong (or the schema is older), writes
    /// a backup copy first ([`Db::backup`]), migrates an older schema, then removes
    /// records that do not decode and rebuilds `pod_names`, `container_names`,
    /// `containers_by_pod` and `image_refs` from the records, in one transaction (see
    /// the module docs for conflicting records). Reports what it found, what it
    /// changed and the check afterwards.
    pub fn repair(&self) -> Result<RepairReport, StoreError> {
        let before = self.check()?;
        if before.is_clean() && !before.migration_pending() {
            return Ok(RepairReport {
                backup: None,
                migrated_from: None,
                found: Vec::new(),
                actions: Vec::new(),
                after: before,
            });
        }
        let backup = self.backup()?;
        let migrated_from =
            meta::init(self, meta::MIGRATIONS, SCHEMA_VERSION)?.filter(|v| *v < SCHEMA_VERSION);
        let actions = self.write("repairing the store", repair_txn)?;
        Ok(RepairReport {
            backup: Some(backup),
            migrated_from,
            found: before.problems,
            actions,
            after: self.check()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc_calendar_times() {
        let at = |secs: u64| utc_stamp(UNIX_EPOCH + std::time::Duration::from_secs(secs));
        assert_eq!(at(0), "19700101T000000Z");
        assert_eq!(at(951_782_400), "20000229T000000Z");
        assert_eq!(at(1_735_689_599), "20241231T235959Z");
        assert_eq!(at(1_740_787_200), "20250301T000000Z");
    }
}
