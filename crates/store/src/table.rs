//! The two shapes of table the store uses, and the transactions over them: JSON
//! records by id, and name (or reference) → id indexes.

use redb::{
    AccessGuard, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, TableHandle,
    WriteTransaction,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::warn;

use crate::{Db, Reserve, StoreError};

/// Records by id, as JSON.
pub(crate) type Records = TableDefinition<'static, &'static str, &'static [u8]>;
/// A unique string → id index.
pub(crate) type Index = TableDefinition<'static, &'static str, &'static str>;

pub(crate) fn decode<T: DeserializeOwned>(
    table: &str,
    key: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        table: table.to_string(),
        key: key.to_string(),
        source,
    })
}

pub(crate) fn encode<T: Serialize>(table: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|source| StoreError::Encode {
        table: table.to_string(),
        source,
    })
}

/// Reserves `name` for `id` in `names`; returns the holder when it is taken.
pub(crate) fn reserve(
    txn: &WriteTransaction,
    names: Index,
    name: &str,
    id: &str,
) -> Result<Option<String>, StoreError> {
    let op = "reserving a name";
    let mut n = txn.open_table(names).map_err(redb_err(op))?;
    if let Some(existing) = n.get(name).map_err(redb_err(op))? {
        return Ok(Some(existing.value().to_string()));
    }
    n.insert(name, id).map_err(redb_err(op))?;
    Ok(None)
}

/// Removes record `id` and frees its name. Returns `None` when there was no record,
/// and the old record when it decoded. A record that no longer decodes has every
/// name pointing at it freed.
pub(crate) fn remove_named<T: Named + DeserializeOwned>(
    txn: &WriteTransaction,
    (records, names): (Records, Index),
    id: &str,
) -> Result<Option<Option<T>>, StoreError> {
    let op = "deleting a record";
    let mut t = txn.open_table(records).map_err(redb_err(op))?;
    let Some(old) = t.remove(id).owned(op)? else {
        return Ok(None);
    };
    let mut n = txn.open_table(names).map_err(redb_err(op))?;
    match decode::<T>(records.name(), id, &old) {
        Ok(rec) => {
            if n.get(rec.name())
                .map_err(redb_err(op))?
                .is_some_and(|v| v.value() == id)
            {
                n.remove(rec.name()).map_err(redb_err(op))?;
            }
            Ok(Some(Some(rec)))
        }
        Err(_) => {
            for name in keys_pointing_at(&n, id)? {
                n.remove(name.as_str()).map_err(redb_err(op))?;
            }
            Ok(Some(None))
        }
    }
}

/// The keys of an index whose value is `id` (a scan: only for records that no
/// longer decode).
pub(crate) fn keys_pointing_at(
    index: &impl ReadableTable<&'static str, &'static str>,
    id: &str,
) -> Result<Vec<String>, StoreError> {
    let op = "scanning an index";
    let mut out = Vec::new();
    for entry in index.iter().map_err(redb_err(op))? {
        let (k, v) = entry.map_err(redb_err(op))?;
        if v.value() == id {
            out.push(k.value().to_string());
        }
    }
    Ok(out)
}

impl Db {
    /// Runs `f` in a read transaction.
    pub(crate) fn read<T>(
        &self,
        op: &'static str,
        f: impl Fn(&ReadTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.with(|db| {
            let txn = db.begin_read().map_err(redb_err(op))?;
            f(&txn)
        })
    }

    /// Runs `f` in a write transaction and commits it when `f` succeeds (a failed
    /// `f` aborts it: nothing of it is written).
    pub(crate) fn write<T>(
        &self,
        op: &'static str,
        f: impl Fn(&WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.with(|db| {
            let txn = db.begin_write().map_err(redb_err(op))?;
            let out = f(&txn)?;
            txn.commit().map_err(redb_err(op))?;
            Ok(out)
        })
    }

    /// One record by id.
    pub(crate) fn get<T: DeserializeOwned>(
        &self,
        def: Records,
        id: &str,
    ) -> Result<Option<T>, StoreError> {
        let op = "reading a record";
        self.read(op, |txn| {
            let t = txn.open_table(def).map_err(redb_err(op))?;
            match t.get(id).map_err(redb_err(op))? {
                None => Ok(None),
                Some(v) => decode(def.name(), id, v.value()).map(Some),
            }
        })
    }

    /// Every record of a table that decodes. One that does not is skipped (and
    /// logged once): `Db::check` reports it and `Db::repair` removes it, and until
    /// then the rest of the store stays usable.
    pub(crate) fn all<T: DeserializeOwned>(&self, def: Records) -> Result<Vec<T>, StoreError> {
        let op = "listing records";
        self.read(op, |txn| {
            let t = txn.open_table(def).map_err(redb_err(op))?;
            let mut out = Vec::new();
            for entry in t.iter().map_err(redb_err(op))? {
                let (k, v) = entry.map_err(redb_err(op))?;
                if let Some(rec) = self.decode_or_skip(def.name(), k.value(), v.value()) {
                    out.push(rec);
                }
            }
            Ok(out)
        })
    }

    /// Decodes a record met while listing; `None` (logged once per record) when it
    /// does not decode.
    pub(crate) fn decode_or_skip<T: DeserializeOwned>(
        &self,
        table: &str,
        key: &str,
        bytes: &[u8],
    ) -> Option<T> {
        match decode(table, key, bytes) {
            Ok(rec) => Some(rec),
            Err(e) => {
                let first = self
                    .skipped
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert((table.to_string(), key.to_string()));
                if first {
                    warn!(store = %self.path.display(), error = %crate::error::chain(&e), "skipping a record that does not decode: run `criusd store check`, then `criusd store repair`");
                }
                None
            }
        }
    }

    /// What an index maps `key` to.
    pub(crate) fn lookup(&self, def: Index, key: &str) -> Result<Option<String>, StoreError> {
        let op = "reading an index";
        self.read(op, |txn| {
            let t = txn.open_table(def).map_err(redb_err(op))?;
            t.get(key).owned(op)
        })
    }

    /// Replaces (or writes) one record.
    pub(crate) fn put<T: Serialize>(
        &self,
        def: Records,
        id: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = encode(def.name(), value)?;
        let op = "writing a record";
        self.write(op, |txn| {
            let mut t = txn.open_table(def).map_err(redb_err(op))?;
            t.insert(id, bytes.as_slice()).map_err(redb_err(op))?;
            Ok(())
        })
    }

    /// Writes a new record and reserves its name in `names`, unless the name is taken.
    pub(crate) fn insert_named<T: Serialize>(
        &self,
        (records, names): (Records, Index),
        id: &str,
        name: &str,
        value: &T,
    ) -> Result<Reserve, StoreError> {
        let bytes = encode(records.name(), value)?;
        let op = "reserving a name";
        self.write(op, |txn| {
            if let Some(holder) = reserve(txn, names, name, id)? {
                return Ok(Reserve::Taken(holder));
            }
            let mut t = txn.open_table(records).map_err(redb_err(op))?;
            t.insert(id, bytes.as_slice()).map_err(redb_err(op))?;
            Ok(Reserve::Done)
        })
    }

    /// Deletes a record and frees its name. Deleting a missing record is not an
    /// error; a record that no longer decodes has every name pointing at it freed.
    pub(crate) fn delete_named<T: Named + DeserializeOwned>(
        &self,
        tables: (Records, Index),
        id: &str,
    ) -> Result<(), StoreError> {
        self.write("deleting a record", |txn| {
            remove_named::<T>(txn, tables, id).map(|_| ())
        })
    }
}

/// A record with a reserved name.
pub(crate) trait Named {
    fn name(&self) -> &str;
}

impl Named for crate::PodRecord {
    fn name(&self) -> &str {
        &self.name
    }
}

impl Named for crate::ContainerRecord {
    fn name(&self) -> &str {
        &self.name
    }
}

/// Maps any redb error to a store error for `op` (the path is filled in by the
/// transaction wrapper).
/// An owned copy of what a table's `get`, `insert` or `remove` returned, with the
/// store's error naming `op`.
pub(crate) trait Owned<T> {
    fn owned(self, op: &'static str) -> Result<Option<T>, StoreError>;
}

impl Owned<String> for Result<Option<AccessGuard<'_, &'static str>>, redb::StorageError> {
    fn owned(self, op: &'static str) -> Result<Option<String>, StoreError> {
        Ok(self.map_err(redb_err(op))?.map(|v| v.value().to_string()))
    }
}

impl Owned<Vec<u8>> for Result<Option<AccessGuard<'_, &'static [u8]>>, redb::StorageError> {
    fn owned(self, op: &'static str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.map_err(redb_err(op))?.map(|v| v.value().to_vec()))
    }
}

pub(crate) fn redb_err<E: Into<redb::Error>>(op: &'static str) -> impl Fn(E) -> StoreError {
    move |e| StoreError::db(op)(e.into())
}
