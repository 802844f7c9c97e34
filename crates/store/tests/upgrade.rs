//! Schema versions: the committed version-1 store opens, is migrated in place and
//! reads back equal; a store from a newer criusd is refused.
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use crius_cni::LeaseStore;
use crius_store::{Db, SCHEMA_VERSION, StoreError};
use redb::{ReadableDatabase, TableDefinition};

const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

/// The version a file records, read with redb alone.
fn raw_version(path: &std::path::Path) -> String {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(META).unwrap();
    meta.get("schema_version")
        .unwrap()
        .unwrap()
        .value()
        .to_string()
}

fn raw_tables(path: &std::path::Path) -> Vec<String> {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let mut names: Vec<String> = txn
        .list_tables()
        .unwrap()
        .map(|t| redb::TableHandle::name(&t).to_string())
        .collect();
    names.sort();
    names
}

fn assert_reads_back(db: &Db) {
    assert_eq!(db.pods().unwrap(), vec![pod()]);
    assert_eq!(db.pod(POD_ID).unwrap(), Some(pod()));
    assert_eq!(
        db.pod_id_by_name(&pod().name).unwrap().as_deref(),
        Some(POD_ID)
    );
    assert_eq!(db.containers().unwrap(), vec![container()]);
    assert_eq!(
        db.container_id_by_name(&container().name)
            .unwrap()
            .as_deref(),
        Some(CONTAINER_ID)
    );
    assert_eq!(db.containers_of_pod(POD_ID).unwrap(), vec![container()]);
    assert_eq!(db.images().unwrap(), vec![image()]);
    for r in image().refs() {
        assert_eq!(db.image_id_by_ref(r).unwrap().as_deref(), Some(IMAGE_ID));
    }
    assert_eq!(LeaseStore::list(db, NETWORK).unwrap(), vec![lease()]);
}

#[test]
fn the_version_1_fixture_opens_is_migrated_and_reads_back_equal() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_fixture(dir.path());
    assert_eq!(raw_version(&path), "1");
    assert!(!raw_tables(&path).contains(&"containers_by_pod".to_string()));

    // Checked as it is: version 1, clean, a migration pending; nothing migrated.
    let before = Db::open_existing(&path).unwrap().check().unwrap();
    assert_eq!(before.schema_version, 1);
    assert!(before.is_clean(), "{before}");
    assert!(before.migration_pending());
    assert_eq!(raw_version(&path), "1");

    let db = Db::open(&path).unwrap();
    assert_eq!(db.schema_version().unwrap(), Some(SCHEMA_VERSION));
    assert_reads_back(&db);
    let report = db.check().unwrap();
    assert!(report.is_clean(), "{report}");
    let count = |t: &str| {
        report
            .tables
            .iter()
            .find(|c| c.table == t)
            .map(|c| c.entries)
    };
    assert_eq!(count("containers_by_pod"), Some(1));
    assert_eq!(count("image_refs"), Some(3));
    assert_eq!(count("ip_leases"), Some(1));
    drop(db);

    // Migrated in place, once.
    assert_eq!(raw_version(&path), SCHEMA_VERSION.to_string());
    assert!(raw_tables(&path).contains(&"containers_by_pod".to_string()));
    let db = Db::open(&path).unwrap();
    assert_reads_back(&db);
}

#[test]
fn a_store_from_a_newer_criusd_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_fixture(dir.path());
    drop(Db::open(&path).unwrap());
    let newer = SCHEMA_VERSION + 1;
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("schema_version", newer.to_string().as_str())
            .unwrap();
        txn.commit().unwrap();
    }
    for result in [Db::open(&path), Db::open_existing(&path)] {
        let Err(e) = result else {
            panic!("a version-{newer} store opened")
        };
        assert!(
            matches!(&e, StoreError::SchemaTooNew { path: p, found, supported }
                if *p == path && *found == newer && *supported == SCHEMA_VERSION),
            "{e:?}"
        );
        let text = e.to_string();
        for part in [
            path.display().to_string(),
            format!("schema version {newer}"),
            format!("versions up to {SCHEMA_VERSION}"),
            "run a criusd that supports".into(),
            "move the state directory aside".into(),
        ] {
            assert!(text.contains(&part), "{text:?} lacks {part:?}");
        }
    }
    assert_eq!(raw_version(&path), newer.to_string());
}

#[test]
fn an_unreadable_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_fixture(dir.path());
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("schema_version", "two")
            .unwrap();
        txn.commit().unwrap();
    }
    let Err(e) = Db::open(&path) else {
        panic!("opened")
    };
    assert!(
        matches!(&e, StoreError::SchemaUnreadable { found, .. } if found == "two"),
        "{e:?}"
    );
}
