//! Damaged store files: truncated or overwritten, `Db::open` returns a typed error
//! (or a usable store), never panics and never hangs; records that no longer decode
//! are reported by the check with their table and key and removed by the repair.
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use crius_store::{Db, ImageRecord, PodRecord, Problem, StoreError};
use redb::TableDefinition;

/// What opening a damaged file came to.
#[derive(Debug)]
enum Outcome {
    /// `Db::open` refused it; the message.
    Refused(String),
    /// It opened, every list call worked and the check found no problem.
    Intact,
}

/// Opens `path` on another thread (a hang fails the test) and, when it opens, runs
/// every list call and the check on it: what opens must hold the fixture's records.
fn open_damaged(path: &Path) -> Outcome {
    let (tx, rx) = mpsc::channel();
    let p = path.to_path_buf();
    std::thread::spawn(move || {
        let out = match Db::open(&p) {
            Err(e) => {
                assert!(
                    matches!(&e, StoreError::Open { path, .. } if *path == p),
                    "{e:?}"
                );
                Outcome::Refused(format!("{e}: {}", std::error::Error::source(&e).unwrap()))
            }
            Ok(db) => {
                assert_eq!(db.pods().unwrap(), vec![pod()]);
                assert_eq!(db.containers().unwrap(), vec![container()]);
                assert_eq!(db.images().unwrap(), vec![image()]);
                assert_eq!(
                    crius_cni::LeaseStore::list(&db, NETWORK).unwrap(),
                    vec![lease()]
                );
                let report = db.check().unwrap();
                assert!(report.is_clean(), "{report}");
                Outcome::Intact
            }
        };
        let _ = tx.send(out);
    });
    // A panic on the thread drops the sender: reported as a disconnect.
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("opening {} did not finish: {e}", path.display()))
}

fn damaged_copy(dir: &Path, name: &str, damage: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(fixture_v1()).unwrap();
    damage(&mut bytes);
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn truncated_files_are_refused_with_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let len = std::fs::metadata(fixture_v1()).unwrap().len() as usize;
    // In the header, at page boundaries, inside pages, one byte short.
    for at in [
        1,
        64,
        511,
        512,
        4096,
        8192,
        12_345,
        len / 2,
        len - 4096,
        len - 1,
    ] {
        let path = damaged_copy(dir.path(), &format!("t{at}.redb"), |b| b.truncate(at));
        match open_damaged(&path) {
            Outcome::Refused(msg) => {
                assert!(msg.contains(&path.display().to_string()), "{msg}")
            }
            Outcome::Intact => panic!("a file truncated to {at} bytes of {len} opened"),
        }
    }
}

#[test]
fn overwritten_bytes_are_refused_or_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let len = std::fs::metadata(fixture_v1()).unwrap().len() as usize;
    let (mut refused, mut intact) = (0, 0);
    // 64 bytes flipped at every KiB: the header, the pages of every table, free
    // space. redb checksums its pages, so a damaged page in use fails the open;
    // damage to space no page uses is harmless.
    for at in (0..len).step_by(1024) {
        let path = damaged_copy(dir.path(), &format!("o{at}.redb"), |b| {
            for x in &mut b[at..(at + 64).min(len)] {
                *x ^= 0x5a;
            }
        });
        match open_damaged(&path) {
            Outcome::Refused(_) => refused += 1,
            Outcome::Intact => intact += 1,
        }
    }
    assert!(
        refused > 0 && intact > 0,
        "{refused} refused, {intact} intact"
    );
}

const PODS: TableDefinition<&str, &[u8]> = TableDefinition::new("pods");
const POD_NAMES: TableDefinition<&str, &str> = TableDefinition::new("pod_names");
const CONTAINERS: TableDefinition<&str, &[u8]> = TableDefinition::new("containers");
const CONTAINER_NAMES: TableDefinition<&str, &str> = TableDefinition::new("container_names");
const BY_POD: TableDefinition<(&str, &str), ()> = TableDefinition::new("containers_by_pod");
const IMAGE_REFS: TableDefinition<&str, &str> = TableDefinition::new("image_refs");
const IP_LEASES: TableDefinition<&str, &str> = TableDefinition::new("ip_leases");

/// The fixture, migrated, then broken the ways a buggy writer (or an older criusd
/// with another record shape) could break it, with redb alone.
fn broken_store(dir: &Path) -> PathBuf {
    let path = copy_fixture(dir);
    drop(Db::open(&path).unwrap());
    let db = redb::Database::open(&path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut pods = txn.open_table(PODS).unwrap();
        pods.insert("bad-pod", b"{\"id\": \"bad-pod\", \"name\": 7".as_slice())
            .unwrap();
        txn.open_table(POD_NAMES)
            .unwrap()
            .insert("ghost_default_uid_0", "no-such-pod")
            .unwrap();
        let mut containers = txn.open_table(CONTAINERS).unwrap();
        containers.insert("bad-c", b"\xff\xfe".as_slice()).unwrap();
        txn.open_table(CONTAINER_NAMES)
            .unwrap()
            .remove(container().name.as_str())
            .unwrap();
        txn.open_table(BY_POD)
            .unwrap()
            .insert(("some-pod", "no-such-container"), ())
            .unwrap();
        let mut refs = txn.open_table(IMAGE_REFS).unwrap();
        refs.insert("registry.local/gone:1", "sha256:gone").unwrap();
        refs.remove(image().repo_tags[1].as_str()).unwrap();
        txn.open_table(IP_LEASES)
            .unwrap()
            .insert("crius0\u{1f}v4\u{1f}p", "not-an-address")
            .unwrap();
    }
    txn.commit().unwrap();
    path
}

fn expected_problems() -> Vec<Problem> {
    let s = |x: &str| x.to_string();
    vec![
        Problem::Undecodable {
            table: s("pods"),
            key: s("bad-pod"),
            error: s("invalid type: integer `7`, expected a string at line 1 column 27"),
        },
        Problem::Dangling {
            table: s("pod_names"),
            key: s("ghost_default_uid_0"),
            target: s("no-such-pod"),
            why: s("no such pod"),
        },
        Problem::Undecodable {
            table: s("containers"),
            key: s("bad-c"),
            error: s("expected value at line 1 column 1"),
        },
        Problem::Unindexed {
            table: s("container_names"),
            key: container().name,
            record: s(CONTAINER_ID),
            holder: None,
        },
        Problem::Dangling {
            table: s("containers_by_pod"),
            key: s("some-pod/no-such-container"),
            target: s("no-such-container"),
            why: s("no such container"),
        },
        Problem::Dangling {
            table: s("image_refs"),
            key: s("registry.local/gone:1"),
            target: s("sha256:gone"),
            why: s("no such image"),
        },
        Problem::Unindexed {
            table: s("image_refs"),
            key: image().repo_tags[1].clone(),
            record: s(IMAGE_ID),
            holder: None,
        },
        Problem::Undecodable {
            table: s("ip_leases"),
            key: s("crius0\u{1f}v4\u{1f}p"),
            error: s("not a lease (address \"not-an-address\")"),
        },
    ]
}

#[test]
fn undecodable_records_are_skipped_by_lists_reported_by_the_check_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let path = broken_store(dir.path());
    let db = Db::open(&path).unwrap();
    // Lists keep working and return what decodes; the record asked for by id is a
    // typed error naming its table and key.
    assert_eq!(db.pods().unwrap(), vec![pod()]);
    assert_eq!(db.containers().unwrap(), vec![container()]);
    assert_eq!(db.containers_of_pod(POD_ID).unwrap(), vec![container()]);
    assert!(db.containers_of_pod("some-pod").unwrap().is_empty());
    assert_eq!(db.images().unwrap(), vec![image()]);
    assert_eq!(
        crius_cni::LeaseStore::list(&db, NETWORK).unwrap(),
        vec![lease()]
    );
    let Err(e) = db.pod("bad-pod") else {
        panic!("an undecodable pod decoded")
    };
    assert!(
        matches!(&e, StoreError::Corrupt { table, key, .. } if table == "pods" && key == "bad-pod"),
        "{e:?}"
    );

    let report = db.check().unwrap();
    assert_eq!(report.problems, expected_problems(), "{report}");
    let text = report.to_string();
    assert!(text.contains("8 problems:"), "{text}");
    assert!(text.contains("pods/bad-pod: does not decode"), "{text}");

    let before = std::fs::read(&path).unwrap();
    let repaired = db.repair().unwrap();
    let backup = repaired.backup.clone().expect("a backup copy");
    let name = backup.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("store.redb.bak-"), "{name}");
    assert_eq!(backup.parent(), path.parent());
    assert_eq!(std::fs::read(&backup).unwrap(), before);
    assert_eq!(repaired.found, expected_problems());
    assert!(repaired.after.is_clean(), "{repaired}");
    let removed: Vec<String> = repaired
        .actions
        .iter()
        .filter(|a| a.what.starts_with("removed"))
        .map(|a| format!("{}/{}", a.table, a.key))
        .collect();
    assert_eq!(
        removed,
        [
            "pods/bad-pod",
            "containers/bad-c",
            "ip_leases/crius0\u{1f}v4\u{1f}p"
        ]
    );

    // Names and references are whole again; the records are the fixture's.
    assert_eq!(
        db.container_id_by_name(&container().name)
            .unwrap()
            .as_deref(),
        Some(CONTAINER_ID)
    );
    assert_eq!(
        db.image_id_by_ref(&image().repo_tags[1])
            .unwrap()
            .as_deref(),
        Some(IMAGE_ID)
    );
    assert!(
        db.image_id_by_ref("registry.local/gone:1")
            .unwrap()
            .is_none()
    );
    assert!(db.pod_id_by_name("ghost_default_uid_0").unwrap().is_none());
    assert_eq!(db.pod("bad-pod").unwrap(), None);
    assert_eq!(db.pods().unwrap(), vec![pod()]);
    assert_eq!(db.containers().unwrap(), vec![container()]);
    assert_eq!(db.images().unwrap(), vec![image()]);

    // A clean store needs nothing, and gets no backup.
    let again = db.repair().unwrap();
    assert_eq!(again.backup, None);
    assert!(again.actions.is_empty());
    drop(db);

    // The backup is the store as it was: it opens and shows the same problems.
    let old = Db::open_existing(&backup).unwrap().check().unwrap();
    assert_eq!(old.problems, expected_problems());
}

#[test]
fn conflicting_records_are_resolved_in_favour_of_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_fixture(dir.path());
    drop(Db::open(&path).unwrap());
    // A second pod record with the first one's name, and a second image listing the
    // first one's tag, each without index entries of its own.
    let twin = PodRecord {
        id: "twin".into(),
        ..pod()
    };
    let other = ImageRecord {
        id: "sha256:other".into(),
        repo_digests: vec![],
        ..image()
    };
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(PODS)
            .unwrap()
            .insert("twin", serde_json::to_vec(&twin).unwrap().as_slice())
            .unwrap();
        txn.open_table(TableDefinition::<&str, &[u8]>::new("images"))
            .unwrap()
            .insert(
                "sha256:other",
                serde_json::to_vec(&other).unwrap().as_slice(),
            )
            .unwrap();
        drop(txn.commit());
    }
    let db = Db::open(&path).unwrap();
    let found = db.check().unwrap();
    assert!(found.problems.contains(&Problem::Unindexed {
        table: "pod_names".into(),
        key: pod().name,
        record: "twin".into(),
        holder: Some(POD_ID.into()),
    }));
    let report = db.repair().unwrap();
    assert!(report.after.is_clean(), "{report}");
    assert_eq!(db.pods().unwrap(), vec![pod()]);
    let kept = ImageRecord {
        repo_tags: vec![],
        ..other
    };
    let mut images = db.images().unwrap();
    images.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(images, vec![image(), kept]);
}

#[test]
fn a_store_held_by_another_handle_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_fixture(dir.path());
    let _daemon = Db::open(&path).unwrap();
    for result in [Db::open_existing(&path), Db::open(&path)] {
        let Err(e) = result else {
            panic!("opened twice")
        };
        assert!(
            matches!(&e, StoreError::InUse { path: p } if *p == path),
            "{e:?}"
        );
        assert!(e.to_string().contains("in use by another process"), "{e}");
    }
}
