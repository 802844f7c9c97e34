//! The shim outlives whoever started it, and an idle shim is small.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use crius_shim::client::{self, ProcessIo, ProcessStatus};
use crius_shim::crilog::Stream;

crius_testkit::runtime_matrix!(sync: survives_its_starter, exit_while_disconnected, idle_rss);

fn status_field(pid: u32, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with(key))
        .map(|l| l[key.len()..].trim().to_string())
        .unwrap()
}

fn survives_its_starter(runtime: Runtime) {
    let fx = Fixture::sh(
        runtime,
        "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.05; done",
    );
    let o = fx.start_options();
    // A shell starts the shim (as criusd would) and exits; so does `crius-shim start`.
    let addr_file = fx.dir.path().join("addr");
    let script = format!(
        "'{}' -id '{}' -bundle '{}' -socket '{}' -runtime '{}' -runtime-root '{}' \
         -log-path '{}' -exit-file '{}' start > '{}'",
        shim_bin().display(),
        fx.id,
        fx.bundle().display(),
        fx.socket().display(),
        o.runtime.display(),
        o.runtime_root.as_ref().unwrap().display(),
        fx.log_path().display(),
        o.exit_file.as_ref().unwrap().display(),
        addr_file.display()
    );
    let mut starter = Command::new("/bin/sh")
        .arg("-c")
        .arg(&script)
        .spawn()
        .unwrap();
    let starter_pid = starter.id();
    assert!(starter.wait().unwrap().success());
    assert!(!std::path::Path::new(&format!("/proc/{starter_pid}")).exists());
    let addr = std::fs::read_to_string(&addr_file).unwrap();
    assert_eq!(addr.trim(), format!("unix://{}", fx.socket().display()));

    let shim = client::connect(&fx.socket(), &fx.id).unwrap();
    let (shim_pid, _) = shim.connect_info().unwrap();
    // Detached: its own session, not our child.
    let stat = std::fs::read_to_string(format!("/proc/{shim_pid}/stat")).unwrap();
    let after = stat.rsplit_once(") ").unwrap().1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let (ppid, sid): (u32, u32) = (fields[1].parse().unwrap(), fields[3].parse().unwrap());
    assert_ne!(ppid, std::process::id());
    assert_eq!(sid, shim_pid, "the shim leads its own session");

    shim.create(&ProcessIo::default()).unwrap();
    shim.start("").unwrap();
    // The caller goes away (as when criusd is killed): drop the only connection.
    drop(shim);
    let count = || join_lines(&parse_log_so_far(&fx.log_path()), Stream::Stdout).len();
    wait_until(Duration::from_secs(10), "some output", || count() >= 2);
    let before = count();
    std::thread::sleep(Duration::from_millis(500));
    assert!(count() > before, "still logging with nobody connected");

    // A new caller finds it again.
    let shim = client::connect(&fx.socket(), &fx.id).unwrap();
    assert_eq!(shim.state("").unwrap().status, ProcessStatus::Running);
    // (SIGTERM would be ignored: sh is the pid namespace's init with no handler.)
    shim.kill("", 9, false).unwrap();
    assert_eq!(shim.wait("").unwrap().code, 137);
    fx.delete_and_clean(&shim);
}

fn idle_rss(runtime: Runtime) {
    let fx = Fixture::new(runtime, &["sleep", "1000"]);
    let t0 = std::time::Instant::now();
    let shim = fx.start_shim();
    let t1 = std::time::Instant::now();
    shim.create(&ProcessIo::default()).unwrap();
    let t2 = std::time::Instant::now();
    shim.start("").unwrap();
    let t3 = std::time::Instant::now();
    println!(
        "crius-shim ({runtime}): shim start {:?}, create {:?}, start {:?}",
        t1 - t0,
        t2 - t1,
        t3 - t2
    );
    let (shim_pid, _) = shim.connect_info().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let rss = status_field(shim_pid, "VmRSS:");
    let threads = status_field(shim_pid, "Threads:");
    if std::env::var_os("CRIUS_SHIM_MEMDEBUG").is_some() {
        println!(
            "{}",
            std::fs::read_to_string(format!("/proc/{shim_pid}/smaps_rollup")).unwrap()
        );
        let smaps = std::fs::read_to_string(format!("/proc/{shim_pid}/smaps")).unwrap();
        let mut cur = String::new();
        for l in smaps.lines() {
            if l.contains('-') && !l.starts_with("Rss") && l.split_whitespace().count() >= 5 {
                cur = l.to_string();
            } else if let Some(v) = l.strip_prefix("Rss:") {
                let v: u64 = v.trim().trim_end_matches("kB").trim().parse().unwrap();
                if v >= 32 {
                    println!("{v:>6} kB  {cur}");
                }
            }
        }
        for t in std::fs::read_dir(format!("/proc/{shim_pid}/task"))
            .unwrap()
            .flatten()
        {
            let name = std::fs::read_to_string(t.path().join("comm")).unwrap();
            print!("{} ", name.trim());
        }
        println!();
    }
    let kib: u64 = rss.trim_end_matches("kB").trim().parse().unwrap();
    let rollup = std::fs::read_to_string(format!("/proc/{shim_pid}/smaps_rollup")).unwrap();
    let field = |k: &str| {
        rollup
            .lines()
            .find(|l| l.starts_with(k))
            .map(|l| l[k.len()..].trim().to_string())
            .unwrap_or_default()
    };
    println!(
        "idle crius-shim ({runtime}, {}): VmRSS {kib} kB, Pss {}, Anonymous {}, {threads} threads",
        shim_bin().display(),
        field("Pss:"),
        field("Anonymous:"),
    );
    // A loose ceiling for the (larger) debug build; the release number is in the README.
    assert!(kib < 8 * 1024, "idle shim RSS {kib} kB");
    shim.kill("", 9, false).unwrap();
    shim.wait("").unwrap();
    fx.delete_and_clean(&shim);
}

/// criusd is down when the container exits: on reconnect the exit is there, with the
/// same code and time as the durable record, and the output is in the log.
fn exit_while_disconnected(runtime: Runtime) {
    let fx = Fixture::sh(runtime, "sleep 0.3; echo late; exit 9");
    let shim = fx.start_running();
    drop(shim);
    let exit_file = fx.dir.path().join("exit.json");
    wait_until(Duration::from_secs(10), "exit record", || {
        client::read_exit_file(&exit_file).unwrap().is_some()
    });
    let rec = client::read_exit_file(&exit_file).unwrap().unwrap();
    assert_eq!(rec.exit_code, 9);
    let shim = client::connect(&fx.socket(), &fx.id).unwrap();
    // The record is written before the shim reports the exit, so State may say
    // Running for a moment after the record appears (under load): wait for it.
    wait_until(Duration::from_secs(10), "State to report the exit", || {
        shim.state("").unwrap().status == ProcessStatus::Stopped
    });
    let st = shim.state("").unwrap();
    let exit = st.exit.unwrap();
    assert_eq!(exit.code, 9);
    assert_eq!(exit.at, rec.exited_at_time());
    assert_eq!(shim.wait("").unwrap().code, 9);
    assert_eq!(
        join_lines(&parse_log(&fx.log_path()), Stream::Stdout),
        vec![b"late".to_vec()]
    );
    fx.delete_and_clean(&shim);
}
