//! Writes the version-1 fixture with the version-1 store (run once, by hand:
//! `cargo test -p crius-store --test v1_fixture -- --ignored`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use crius_cni::LeaseStore;
use crius_store::{Db, Reserve};

#[test]
#[ignore = "writes the committed fixture"]
fn write_v1_fixture() {
    let path = common::fixture_v1();
    let _ = std::fs::remove_file(&path);
    let db = Db::open(&path).unwrap();
    assert_eq!(db.insert_pod(&common::pod()).unwrap(), Reserve::Done);
    assert_eq!(
        db.insert_container(&common::container()).unwrap(),
        Reserve::Done
    );
    db.put_image(&common::image()).unwrap();
    db.insert(&common::lease()).unwrap();
    drop(db);
    // Compacted, so the committed file is as small as redb makes it.
    let mut raw = redb::Database::open(&path).unwrap();
    while raw.compact().unwrap() {}
}
