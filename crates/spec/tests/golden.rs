//! The generated specs of representative inputs, compared with fixtures recorded from
//! the generator crius-spec replaced (`tests/fixtures/`, one JSON document per case of
//! `golden/cases.rs`, plus the refusals' messages and UpdateContainerResources'
//! resources). A fixture changes only with an intended change of the generated spec:
//! re-record them with `CRIUS_SPEC_BLESS=1 cargo test -p crius-spec --test golden`
//! and review the diff.
//!
//! The fixtures were recorded on a node with swap accounting, online CPUs 0-1 and
//! memory node 0; the host facts below say so, whatever the node running the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "golden/cases.rs"]
mod cases;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crius_spec::{
    CgroupDriver, Generated, HostFacts, IdSet, ImageConfig, PodNamespaces, SpecError, SpecInput,
    generate, linux_resources,
};
use serde_json::{Value, json};

fn host(case: &cases::Case) -> HostFacts {
    HostFacts {
        oom_score_adj_floor: case.floor,
        cap_bounding_set: case.bounding,
        swap_accounting: true,
        online_cpus: IdSet::parse("0-1").unwrap(),
        online_mems: IdSet::parse("0").unwrap(),
    }
}

fn run(case: &cases::Case) -> Result<Generated, SpecError> {
    let image = ImageConfig {
        entrypoint: case.image.entrypoint.clone(),
        cmd: case.image.cmd.clone(),
        env: case.image.env.clone(),
        working_dir: case.image.working_dir.clone(),
        user: case.image.user.clone(),
        stop_signal: case.image.stop_signal.clone(),
    };
    let ns = PodNamespaces {
        net: case.ns.net.clone(),
        ipc: case.ns.ipc.clone(),
        uts: case.ns.uts.clone(),
        pid: case.ns.pid.clone(),
        target_pid: case.ns.target_pid.clone(),
        user: case.ns.user.clone(),
    };
    generate(&SpecInput {
        container_id: "c0ffee",
        sandbox_id: "5a4d",
        config: &case.config,
        sandbox: &case.sandbox,
        image: &image,
        rootfs: &case.rootfs,
        pod_dir: &case.pod_dir,
        shm: case.shm.as_deref(),
        namespaces: &ns,
        cgroup_driver: if case.systemd {
            CgroupDriver::Systemd
        } else {
            CgroupDriver::Cgroupfs
        },
        seccomp_profile_root: &case.profiles,
        host: &host(case),
        prepared_mounts: &Default::default(),
        cdi: &Default::default(),
    })
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Compares `got` with fixture `name` (or records it); returns whether they differ.
fn differs(name: &str, got: &Value) -> bool {
    let path = fixtures().join(format!("{name}.json"));
    if std::env::var_os("CRIUS_SPEC_BLESS").is_some() {
        let mut text = serde_json::to_string_pretty(got).unwrap();
        text.push('\n');
        std::fs::write(&path, text).unwrap();
        return false;
    }
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
    let want: Value = serde_json::from_slice(&text).unwrap();
    if got != &want {
        eprintln!(
            "{name} differs from {}:\n got: {}\nwant: {}",
            path.display(),
            serde_json::to_string(got).unwrap(),
            serde_json::to_string(&want).unwrap()
        );
        return true;
    }
    false
}

#[test]
fn generated_specs_match_the_fixtures() {
    let dir = tempfile::tempdir().unwrap();
    cases::layout(dir.path());
    let all = cases::cases(dir.path());
    assert!(all.len() >= 60, "the case list shrank");
    let mut failed = Vec::new();
    for case in &all {
        let g = run(case).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let mut spec = serde_json::to_value(&g.spec).unwrap();
        cases::normalise(&mut spec, dir.path(), case.keep_arch);
        let doc = json!({
            "uid": g.uid,
            "gid": g.gid,
            "stopSignal": g.stop_signal,
            "spec": spec,
        });
        if differs(case.name, &doc) {
            failed.push(case.name);
        }
    }
    assert!(
        failed.is_empty(),
        "specs differ from their fixtures: {failed:?}"
    );
}

#[test]
fn refusals_match_the_fixture() {
    let dir = tempfile::tempdir().unwrap();
    cases::layout(dir.path());
    let mut errors = BTreeMap::new();
    for case in cases::error_cases(dir.path()) {
        match run(&case) {
            Ok(_) => panic!("{}: accepted", case.name),
            Err(e) => {
                assert!(
                    matches!(
                        e,
                        SpecError::InvalidField { .. } | SpecError::Unsupported { .. }
                    ),
                    "{}: {e:?}",
                    case.name
                );
                errors.insert(
                    case.name,
                    cases::normalise_message(&e.to_string(), dir.path()),
                );
            }
        }
    }
    assert!(!differs("errors", &json!(errors)));
}

#[test]
fn update_resources_match_the_fixture() {
    let dir = tempfile::tempdir().unwrap();
    cases::layout(dir.path());
    let facts = host(&cases::cases(dir.path())[0]);
    let mut updates = BTreeMap::new();
    for (name, r) in cases::update_cases() {
        updates.insert(name, linux_resources(&r, &facts).unwrap());
    }
    assert!(!differs("update_resources", &json!(updates)));
}
