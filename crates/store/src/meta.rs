//! The `meta` table: the schema version of the store, checked at open.

use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};

use crate::StoreError;
use crate::table::redb_err;

const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

/// The schema this criusd writes and reads.
pub(crate) const SCHEMA_VERSION: &str = "1";

/// Checks (or, in a new store, writes) the schema version and creates every table.
pub(crate) fn init(db: &Database, path: &Path) -> Result<(), StoreError> {
    let op = "initialising the store";
    let txn = db.begin_write().map_err(redb_err(op))?;
    {
        let mut meta = txn.open_table(META).map_err(redb_err(op))?;
        let existing = meta
            .get("schema_version")
            .map_err(redb_err(op))?
            .map(|v| v.value().to_string());
        match existing {
            None => {
                meta.insert("schema_version", SCHEMA_VERSION)
                    .map_err(redb_err(op))?;
            }
            Some(v) if v == SCHEMA_VERSION => {}
            Some(found) => {
                return Err(StoreError::SchemaTooNew {
                    path: path.to_path_buf(),
                    found,
                    supported: SCHEMA_VERSION.to_string(),
                });
            }
        }
        crate::pods::create_tables(&txn)?;
        crate::containers::create_tables(&txn)?;
        crate::images::create_tables(&txn)?;
        crate::leases::create_tables(&txn)?;
    }
    txn.commit().map_err(redb_err(op))
}
