//! `criusd check` on this host: the prerequisites the tests need are there, so it
//! passes; a configuration whose default runtime is missing fails with that row.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use crius_e2e::criusd_bin;

fn check(config: Option<&std::path::Path>) -> (i32, String) {
    let mut cmd = Command::new(criusd_bin());
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let out = cmd.arg("check").output().expect("running criusd check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn check_passes_here_and_names_what_is_missing() {
    let (code, table) = check(None);
    assert_eq!(code, 0, "{table}");
    for row in [
        "kernel",
        "overlayfs",
        "cgroups",
        "OCI runtime",
        "iptables",
        "privileges",
    ] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(row) && !l.contains("FAIL")),
            "{row}: {table}"
        );
    }
    assert!(table.contains("runc version"), "{table}");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("criusd.toml");
    std::fs::write(
        &config,
        "default_runtime = \"gone\"\n[runtimes.gone]\npath = \"/nonexistent/crius-test-runtime\"\n",
    )
    .unwrap();
    let (code, table) = check(Some(&config));
    assert_eq!(code, 1, "{table}");
    let row = table
        .lines()
        .find(|l| l.contains("/nonexistent/crius-test-runtime"))
        .expect("the runtime's row");
    assert!(
        row.contains("FAIL") && row.contains("default handler"),
        "{row}"
    );
    assert!(table.contains("cannot run"), "{table}");
}
