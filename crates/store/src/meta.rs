//! The `meta` table: the schema version of the store, checked at open; and the
//! migrations that bring an older store up to [`SCHEMA_VERSION`].
//!
//! Versions:
//! - 1: `pods`, `pod_names`, `containers`, `container_names`, `images`,
//!   `image_refs`, `ip_leases`.
//! - 2: adds `containers_by_pod` (pod id, container id), kept with the container
//!   records, so a pod's containers are found without reading every container.
//!
//! A migration is a function from version N to N+1 over one write transaction. An
//! older store is brought up to date at open in a single transaction that runs every
//! migration it needs and then records the new version: a crash (or a failure) part
//! way leaves the file exactly at the version it had.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::table::{Owned, redb_err};
use crate::{Db, StoreError};

pub(crate) const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const VERSION_KEY: &str = "schema_version";

/// The schema this criusd writes and reads.
pub const SCHEMA_VERSION: u32 = 2;

/// One step of the schema: what `run` does takes a version-`from` store to
/// `from + 1`, inside the caller's transaction.
#[derive(Clone, Copy)]
pub(crate) struct Migration {
    pub(crate) from: u32,
    pub(crate) run: fn(&WriteTransaction) -> Result<(), StoreError>,
}

/// Every migration, oldest first: `MIGRATIONS[i]` goes from version `i + 1`.
pub(crate) const MIGRATIONS: &[Migration] = &[Migration {
    from: 1,
    run: crate::containers::index_by_pod,
}];

// One migration per version step, in order.
const _: () = {
    assert!(MIGRATIONS.len() as u32 == SCHEMA_VERSION - 1);
    let mut i = 0;
    while i < MIGRATIONS.len() {
        assert!(MIGRATIONS[i].from == i as u32 + 1);
        i += 1;
    }
};

/// The schema version recorded in a table, `None` in a store that has none yet.
pub(crate) fn read_version(
    db: &Db,
    meta: &impl ReadableTable<&'static str, &'static str>,
) -> Result<Option<u32>, StoreError> {
    let op = "reading the schema version";
    let Some(found) = meta.get(VERSION_KEY).owned(op)? else {
        return Ok(None);
    };
    match found.parse::<u32>() {
        Ok(v) if v > 0 => Ok(Some(v)),
        _ => Err(StoreError::SchemaUnreadable {
            path: db.path().to_path_buf(),
            found,
        }),
    }
}

/// Checks the schema version; writes it into a new store; migrates an older one up
/// to `target`, running `migrations`, all in one transaction. Makes every table
/// exist. Returns the version the store had (`None` when it was new).
pub(crate) fn init(
    db: &Db,
    migrations: &[Migration],
    target: u32,
) -> Result<Option<u32>, StoreError> {
    let op = "initialising the store";
    db.write(op, |txn| {
        let found = {
            let meta = txn.open_table(META).map_err(redb_err(op))?;
            read_version(db, &meta)?
        };
        match found {
            None => {}
            Some(v) if v == target => {}
            Some(v) if v > target => {
                return Err(StoreError::SchemaTooNew {
                    path: db.path().to_path_buf(),
                    found: v,
                    supported: target,
                });
            }
            Some(v) => {
                for step in migrations.iter().filter(|m| m.from >= v && m.from < target) {
                    (step.run)(txn).map_err(|e| StoreError::Migration {
                        path: db.path().to_path_buf(),
                        from: step.from,
                        source: Box::new(e.located(db.path())),
                    })?;
                }
            }
        }
        if found != Some(target) {
            let version = target.to_string();
            txn.open_table(META)
                .map_err(redb_err(op))?
                .insert(VERSION_KEY, version.as_str())
                .map_err(redb_err(op))?;
        }
        create_tables(txn)?;
        Ok(found)
    })
}

/// Makes every table of the current schema exist.
pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    crate::pods::create_tables(txn)?;
    crate::containers::create_tables(txn)?;
    crate::images::create_tables(txn)?;
    crate::leases::create_tables(txn)?;
    Ok(())
}
