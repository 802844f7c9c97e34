//! Records (with `CRIUS_SPEC_BLESS=1`) or checks the golden fixtures of the spec
//! generator, `crates/spec/tests/fixtures/`, against this generator: the fixtures pin
//! its output before it moves into crius-spec.

#[allow(dead_code)]
#[path = "../../../spec/tests/golden/cases.rs"]
mod cases;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::spec::{Generated, PodNamespaces, SpecInput, generate, linux_resources};
use crate::config::CgroupDriver;
use crate::error::CriError;
use crate::image::ImageRunConfig;

fn run(case: &cases::Case) -> Result<Generated, CriError> {
    let image = ImageRunConfig {
        entrypoint: case.image.entrypoint.clone(),
        cmd: case.image.cmd.clone(),
        env: case.image.env.clone(),
        working_dir: case.image.working_dir.clone(),
        user: case.image.user.clone(),
        stop_signal: case.image.stop_signal.clone(),
        ..Default::default()
    };
    let ns = PodNamespaces {
        net: case.ns.net.clone(),
        ipc: case.ns.ipc.clone(),
        uts: case.ns.uts.clone(),
        pid: case.ns.pid.clone(),
        target_pid: case.ns.target_pid.clone(),
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
        oom_score_adj_floor: case.floor,
        seccomp_profile_root: &case.profiles,
        cap_bounding_set: case.bounding,
    })
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/tests/fixtures")
}

fn check(name: &str, got: &Value) {
    let path = fixtures().join(format!("{name}.json"));
    if std::env::var_os("CRIUS_SPEC_BLESS").is_some() {
        std::fs::create_dir_all(fixtures()).unwrap();
        let mut text = serde_json::to_string_pretty(got).unwrap();
        text.push('\n');
        std::fs::write(&path, text).unwrap();
        return;
    }
    let want: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(got, &want, "{name} differs from {}", path.display());
}

#[test]
fn golden_fixtures() {
    let dir = tempfile::tempdir().unwrap();
    cases::layout(dir.path());
    for case in cases::cases(dir.path()) {
        let g = run(&case).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let mut spec = serde_json::to_value(&g.spec).unwrap();
        cases::normalise(&mut spec, dir.path(), case.keep_arch);
        let doc = json!({
            "uid": g.uid,
            "gid": g.gid,
            "stopSignal": g.stop_signal,
            "spec": spec,
        });
        check(case.name, &doc);
    }
    let mut errors = BTreeMap::new();
    for case in cases::error_cases(dir.path()) {
        match run(&case) {
            Ok(_) => panic!("{}: accepted", case.name),
            Err(e) => {
                errors.insert(
                    case.name,
                    cases::normalise_message(&e.to_string(), dir.path()),
                );
            }
        }
    }
    check("errors", &json!(errors));
    let mut updates = BTreeMap::new();
    for (name, r) in cases::update_cases() {
        updates.insert(name, linux_resources(&r).unwrap());
    }
    check("update_resources", &json!(updates));
}
