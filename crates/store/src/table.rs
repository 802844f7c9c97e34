//! The two shapes of table the store uses, and the transactions over them: JSON
//! records by id, and name (or reference) → id indexes.

use redb::{
    ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, TableHandle,
    WriteTransaction,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

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

impl Db {
    /// Runs `f` in a read transaction.
    pub(crate) fn read<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&ReadTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| StoreError::db(op)(e.into()))?;
        f(&txn)
    }

    /// Runs `f` in a write transaction and commits it when `f` succeeds.
    pub(crate) fn write<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let txn = self
            .db
            .begin_write()
            .map_err(|e| StoreError::db(op)(e.into()))?;
        let out = f(&txn)?;
        txn.commit().map_err(|e| StoreError::db(op)(e.into()))?;
        Ok(out)
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

    /// Every record of a table.
    pub(crate) fn all<T: DeserializeOwned>(&self, def: Records) -> Result<Vec<T>, StoreError> {
        let op = "listing records";
        self.read(op, |txn| {
            let t = txn.open_table(def).map_err(redb_err(op))?;
            let mut out = Vec::new();
            for entry in t.iter().map_err(redb_err(op))? {
                let (k, v) = entry.map_err(redb_err(op))?;
                out.push(decode(def.name(), k.value(), v.value())?);
            }
            Ok(out)
        })
    }

    /// What an index maps `key` to.
    pub(crate) fn lookup(&self, def: Index, key: &str) -> Result<Option<String>, StoreError> {
        let op = "reading an index";
        self.read(op, |txn| {
            let t = txn.open_table(def).map_err(redb_err(op))?;
            Ok(t.get(key)
                .map_err(redb_err(op))?
                .map(|v| v.value().to_string()))
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
            let mut n = txn.open_table(names).map_err(redb_err(op))?;
            if let Some(existing) = n.get(name).map_err(redb_err(op))? {
                return Ok(Reserve::Taken(existing.value().to_string()));
            }
            n.insert(name, id).map_err(redb_err(op))?;
            let mut t = txn.open_table(records).map_err(redb_err(op))?;
            t.insert(id, bytes.as_slice()).map_err(redb_err(op))?;
            Ok(Reserve::Done)
        })
    }

    /// Deletes a record and frees its name. Deleting a missing record is not an
    /// error; a record that no longer decodes has every name pointing at it freed.
    pub(crate) fn delete_named<T: Named + DeserializeOwned>(
        &self,
        (records, names): (Records, Index),
        id: &str,
    ) -> Result<(), StoreError> {
        let op = "deleting a record";
        self.write(op, |txn| {
            let mut t = txn.open_table(records).map_err(redb_err(op))?;
            let Some(old) = t
                .remove(id)
                .map_err(redb_err(op))?
                .map(|v| v.value().to_vec())
            else {
                return Ok(());
            };
            let mut n = txn.open_table(names).map_err(redb_err(op))?;
            match decode::<T>(records.name(), id, &old) {
                Ok(rec) => {
                    n.remove(rec.name()).map_err(redb_err(op))?;
                }
                Err(_) => {
                    let stale: Vec<String> = n
                        .iter()
                        .map_err(redb_err(op))?
                        .filter_map(Result::ok)
                        .filter(|(_, v)| v.value() == id)
                        .map(|(k, _)| k.value().to_string())
                        .collect();
                    for name in stale {
                        n.remove(name.as_str()).map_err(redb_err(op))?;
                    }
                }
            }
            Ok(())
        })
    }
}

/// A record with a reserved name.
pub(crate) trait Named {
    fn name(&self) -> &str;
}

/// Maps any redb error to a store error for `op`.
pub(crate) fn redb_err<E: Into<redb::Error>>(op: &'static str) -> impl Fn(E) -> StoreError {
    move |e| StoreError::Db {
        op,
        source: e.into(),
    }
}
