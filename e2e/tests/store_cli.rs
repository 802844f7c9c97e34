//! `criusd store check|repair` against a real daemon's store: refused with a clear
//! message while the daemon holds it, a clean report once it is stopped, and the
//! daemon starts again on the store afterwards.
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use crius_e2e::*;

fn store(d: &Daemon, what: &str) -> Output {
    Command::new(criusd_bin())
        .args(["store", what, "--config"])
        .arg(&d.config_path)
        .output()
        .expect("running criusd store")
}

fn text(out: &Output) -> String {
    format!(
        "exit {}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn store_commands_refuse_a_held_store_and_report_a_stopped_one() {
    let mut d = Daemon::start("storecli").await;
    let pod = run_pod(&mut d.rt, PodBuilder::new("storecli"))
        .await
        .expect("RunPodSandbox");
    let path = d.state_dir().join("store.redb");

    for what in ["check", "repair"] {
        let out = store(&d, what);
        assert_eq!(out.status.code(), Some(2), "{what}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!(
                "the metadata store {} is in use by another process (a running criusd?): stop it first",
                path.display()
            )),
            "{what}: {}",
            text(&out)
        );
    }

    d.stop().await.unwrap();
    let out = store(&d, "check");
    assert!(out.status.success(), "{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    for line in [
        format!("metadata store {}", path.display()),
        "schema version 2".to_string(),
        "no problems".to_string(),
    ] {
        assert!(report.contains(&line), "{line:?}: {}", text(&out));
    }
    let pods_line = report
        .lines()
        .find(|l| l.trim_start().starts_with("pods "))
        .unwrap_or_default();
    assert!(pods_line.trim_end().ends_with(" 1"), "{}", text(&out));

    // A clean store is not touched by a repair: no backup copy.
    let out = store(&d, "repair");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("nothing to repair"),
        "{}",
        text(&out)
    );
    let backups: Vec<String> = std::fs::read_dir(d.state_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".bak-"))
        .collect();
    assert!(backups.is_empty(), "{backups:?}");

    d.spawn().await.unwrap();
    assert_eq!(
        list_pods(&mut d.rt, None)
            .await
            .into_iter()
            .map(|p| p.id)
            .collect::<Vec<_>>(),
        [pod.as_str()]
    );
    remove_pod(&mut d.rt, &pod).await.unwrap();
    d.finish().await;
}
