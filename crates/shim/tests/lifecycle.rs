//! Container lifecycle through crius-shim, under runc and crun.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use crius_shim::client::{self, Error, ProcessIo, ProcessStatus};
use crius_shim::crilog::Stream;

crius_testkit::runtime_matrix!(sync:
    oom_killed,
    delete_unstarted,
    kill_all,
    stdin_and_close_io,
    terminal,
    exit_codes,
    kill_sigkill_137,
    cri_log_format,
    reopen_log,
    exec,
    shim_death_detected
);

fn run_to_exit(runtime: Runtime, script: &str, want: u32) {
    let fx = Fixture::sh(runtime, script);
    let shim = fx.start_shim();
    let pid = shim.create(&ProcessIo::default()).unwrap();
    assert!(pid > 0);
    let st = shim.state("").unwrap();
    assert_eq!(st.status, ProcessStatus::Created);
    assert_eq!(st.pid, pid);
    let before = SystemTime::now();
    assert_eq!(shim.start("").unwrap(), pid);
    let exit = shim.wait("").unwrap();
    assert_eq!(exit.code, want);
    assert!(exit.at >= before - Duration::from_secs(1));
    let st = shim.state("").unwrap();
    assert_eq!(st.status, ProcessStatus::Stopped);
    assert_eq!(st.exit.unwrap().code, want);
    // The exit record is on disk, with the same code and time.
    let rec = client::read_exit_file(&fx.dir.path().join("exit.json"))
        .unwrap()
        .expect("exit record written");
    assert_eq!(rec.exit_code, want);
    assert_eq!(rec.pid, pid);
    assert!(!rec.oom_killed);
    assert!(rec.exited_at.ends_with('Z'));
    let d = exit
        .at
        .duration_since(rec.exited_at_time())
        .unwrap_or_else(|e| e.duration());
    assert!(
        d < Duration::from_millis(1),
        "wait and exit file agree on the time"
    );
    let del = shim.delete("").unwrap();
    assert_eq!(del.code, want);
    shim.shutdown(false).unwrap();
    assert!(!shim.is_alive());
    fx.assert_clean();
}

fn exit_codes(runtime: Runtime) {
    run_to_exit(runtime, "exit 0", 0);
    run_to_exit(runtime, "echo bye; exit 3", 3);
}

fn kill_sigkill_137(runtime: Runtime) {
    let fx = Fixture::new(runtime, &["sleep", "1000"]);
    let shim = fx.start_running();
    assert_eq!(shim.state("").unwrap().status, ProcessStatus::Running);
    // Running containers can't be deleted.
    assert!(shim.delete("").is_err());
    assert_eq!(shim.pids().unwrap().len(), 1);
    // The container has its own cgroup (which assert_clean then checks is gone).
    assert!(!cgroups_named(&fx.cgroup_name()).is_empty());
    // Update goes through `runtime update --resources`.
    shim.update(br#"{"pids":{"limit":57},"memory":{"limit":67108864}}"#)
        .unwrap();
    let cg = |ctrl: &str, file: &str| {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{ctrl}/{}/{file}", fx.cgroup_name()))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(cg("pids", "pids.max"), "57");
    assert_eq!(cg("memory", "memory.limit_in_bytes"), "67108864");
    shim.kill("", 9, false).unwrap();
    assert_eq!(shim.wait("").unwrap().code, 137);
    // Killing a finished container says so.
    assert!(shim.kill("", 9, false).unwrap_err().is_not_found());
    assert_eq!(shim.delete("").unwrap().code, 137);
    shim.shutdown(false).unwrap();
    fx.assert_clean();
}

fn cri_log_format(runtime: Runtime) {
    // A 100 KiB line, short lines on both streams, an empty line, and output that ends
    // without a newline.
    let script = "echo first; echo oops >&2; echo; \
                  head -c 102400 /dev/zero | tr '\\0' x; echo; \
                  printf 'no newline at end'";
    let fx = Fixture::sh(runtime, script);
    let shim = fx.start_running();
    assert_eq!(shim.wait("").unwrap().code, 0);
    let recs = parse_log(&fx.log_path());
    let out = join_lines(&recs, Stream::Stdout);
    let err = join_lines(&recs, Stream::Stderr);
    assert_eq!(err, vec![b"oops".to_vec()]);
    assert_eq!(
        out.len(),
        4,
        "{:?}",
        out.iter().map(|l| l.len()).collect::<Vec<_>>()
    );
    assert_eq!(out[0], b"first");
    assert_eq!(out[1], b"");
    assert_eq!(out[2], vec![b'x'; 102_400]);
    assert_eq!(out[3], b"no newline at end");
    // The long line: 6 full 16 KiB P records, then the 4 KiB rest as F.
    let long: Vec<_> = recs
        .iter()
        .filter(|(s, _, m)| *s == Stream::Stdout && m.first() == Some(&b'x'))
        .collect();
    assert_eq!(long.len(), 7);
    for r in &long[..6] {
        assert!(r.1, "partial");
        assert_eq!(r.2.len(), 16 * 1024);
    }
    assert!(!long[6].1);
    assert_eq!(long[6].2.len(), 102_400 - 6 * 16 * 1024);
    // The unterminated tail is a P record, the last one.
    let last = recs.last().unwrap();
    assert!(last.1 && last.2 == b"no newline at end");
    fx.delete_and_clean(&shim);
}

fn reopen_log(runtime: Runtime) {
    let fx = Fixture::sh(
        runtime,
        "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.05; done",
    );
    let shim = fx.start_running();
    wait_until(Duration::from_secs(10), "first lines", || {
        parse_log_so_far(&fx.log_path()).len() >= 3
    });
    let rotated = fx.dir.path().join("ctr.log.1");
    std::fs::rename(fx.log_path(), &rotated).unwrap();
    shim.reopen_log().unwrap();
    // Lines written after the reopen land in the new file.
    wait_until(Duration::from_secs(10), "lines in the new file", || {
        parse_log_so_far(&fx.log_path()).len() >= 3
    });
    let old = join_lines(&parse_log(&rotated), Stream::Stdout);
    let new = join_lines(&parse_log(&fx.log_path()), Stream::Stdout);
    let num = |l: &Vec<u8>| -> u32 {
        String::from_utf8_lossy(l)
            .strip_prefix("line ")
            .unwrap()
            .parse()
            .unwrap()
    };
    let old_last = num(old.last().unwrap());
    let new_first = num(&new[0]);
    assert!(new_first > old_last, "new file continues the sequence");
    // Nothing lost around the switch.
    assert_eq!(new_first, old_last + 1);
    shim.kill("", 9, false).unwrap();
    assert_eq!(shim.wait("").unwrap().code, 137);
    fx.delete_and_clean(&shim);
}

fn exec(runtime: Runtime) {
    let fx = Fixture::new(runtime, &["sleep", "1000"]);
    let shim = fx.start_running();

    // ExecSync: output captured per stream, exit code.
    let out = shim
        .exec_sync(
            "e1",
            &process_json(&["sh", "-c", "echo out; echo err >&2; exit 7"]),
            Duration::from_secs(20),
            0,
        )
        .unwrap();
    assert_eq!(out.exit_code, 7);
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    assert!(!out.timed_out && !out.truncated);

    // The output cap.
    let out = shim
        .exec_sync(
            "e2",
            &process_json(&["sh", "-c", "head -c 100000 /dev/zero"]),
            Duration::from_secs(20),
            1000,
        )
        .unwrap();
    assert_eq!(out.exit_code, 0);
    assert_eq!(out.stdout.len(), 1000);
    assert!(out.truncated);

    // The timeout kills the process.
    let t0 = std::time::Instant::now();
    let out = shim
        .exec_sync(
            "e3",
            &process_json(&["sleep", "100"]),
            Duration::from_millis(500),
            0,
        )
        .unwrap();
    assert!(out.timed_out);
    assert_eq!(out.exit_code, 137);
    assert!(t0.elapsed() < Duration::from_secs(15));

    // Exec + Start + Wait with output to a file (the Task-service way).
    let outfile = fx.dir.path().join("exec.out");
    let io = ProcessIo {
        stdout: format!("file://{}", outfile.display()),
        ..Default::default()
    };
    shim.exec("e4", &process_json(&["sh", "-c", "echo hi; exit 5"]), &io)
        .unwrap();
    assert_eq!(shim.state("e4").unwrap().status, ProcessStatus::Created);
    let pid = shim.start("e4").unwrap();
    assert!(pid > 0);
    assert_eq!(shim.wait("e4").unwrap().code, 5);
    assert_eq!(std::fs::read(&outfile).unwrap(), b"hi\n");
    assert_eq!(shim.delete("e4").unwrap().code, 5);
    assert!(shim.state("e4").unwrap_err().is_not_found());

    // Kill an exec.
    shim.exec(
        "e5",
        &process_json(&["sleep", "100"]),
        &ProcessIo::default(),
    )
    .unwrap();
    shim.start("e5").unwrap();
    shim.kill("e5", 9, false).unwrap();
    assert_eq!(shim.wait("e5").unwrap().code, 137);
    shim.delete("e5").unwrap();

    // Exec output never reaches the container's log.
    let recs = parse_log(&fx.log_path());
    assert!(recs.is_empty(), "{recs:?}");

    shim.kill("", 9, false).unwrap();
    shim.wait("").unwrap();
    fx.delete_and_clean(&shim);
}

fn shim_death_detected(runtime: Runtime) {
    let fx = Fixture::new(runtime, &["sleep", "1000"]);
    let shim = fx.start_running();
    let (shim_pid, task_pid) = shim.connect_info().unwrap();
    assert!(task_pid > 0);
    // SIGKILL the shim by its pid.
    let st = std::process::Command::new("kill")
        .args(["-9", &shim_pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    wait_until(Duration::from_secs(10), "shim gone", || {
        !std::path::Path::new(&format!("/proc/{shim_pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{shim_pid}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true)
    });
    match shim.state("") {
        Err(Error::ShimGone(_)) => {}
        other => panic!("expected ShimGone, got {other:?}"),
    }
    assert!(!shim.is_alive());
    match client::connect(&fx.socket(), &fx.id) {
        Err(Error::ShimGone(_)) => {}
        other => panic!("expected ShimGone on reconnect, got {other:?}"),
    }
    // No exit record: the container did not exit, the shim did.
    assert!(
        client::read_exit_file(&fx.dir.path().join("exit.json"))
            .unwrap()
            .is_none()
    );
    // Clean up the orphaned container the way containerd does: `crius-shim delete`.
    let o = fx.start_options();
    let out = std::process::Command::new(shim_bin())
        .arg("-id")
        .arg(&fx.id)
        .arg("-bundle")
        .arg(fx.bundle())
        .arg("-socket")
        .arg(fx.socket())
        .arg("-runtime")
        .arg(&o.runtime)
        .arg("-runtime-root")
        .arg(o.runtime_root.unwrap())
        .arg("-exit-file")
        .arg(o.exit_file.unwrap())
        .arg("delete")
        .current_dir(fx.bundle())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.stdout.is_empty(), "a DeleteResponse on stdout");
    fx.assert_clean();
}

fn terminal(runtime: Runtime) {
    let fx = Fixture::new(runtime, &[]);
    fx.write_config(&["sh", "-c", "tty; stty size; read x; exit 4"], true);
    let shim = fx.start_shim();
    let stdin = fx.stdin_fifo();
    shim.create(&ProcessIo {
        terminal: true,
        stdin: stdin.display().to_string(),
        ..Default::default()
    })
    .unwrap();
    shim.resize_pty("", 100, 40).unwrap();
    let writer = std::thread::spawn({
        let stdin = stdin.clone();
        move || std::fs::OpenOptions::new().write(true).open(stdin).unwrap()
    });
    shim.start("").unwrap();
    let mut w = writer.join().unwrap();
    wait_until(Duration::from_secs(10), "tty output", || {
        join_lines(&parse_log_so_far(&fx.log_path()), Stream::Stdout).len() >= 2
    });
    // An exec with its own pty, output to a file.
    let outfile = fx.dir.path().join("exec-tty.out");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&process_json(&["sh", "-c", "tty; exit 6"])).unwrap();
    spec["terminal"] = serde_json::Value::Bool(true);
    shim.exec(
        "t1",
        &serde_json::to_vec(&spec).unwrap(),
        &ProcessIo {
            terminal: true,
            stdout: format!("file://{}", outfile.display()),
            ..Default::default()
        },
    )
    .unwrap();
    shim.start("t1").unwrap();
    shim.resize_pty("t1", 80, 24).unwrap();
    assert_eq!(shim.wait("t1").unwrap().code, 6);
    let out = std::fs::read_to_string(&outfile).unwrap();
    assert!(out.starts_with("/dev/pts/"), "{out:?}");
    shim.delete("t1").unwrap();
    // Input through the pty ends the init.
    std::io::Write::write_all(&mut w, b"go\n").unwrap();
    assert_eq!(shim.wait("").unwrap().code, 4);
    drop(w);
    let lines: Vec<String> = join_lines(&parse_log(&fx.log_path()), Stream::Stdout)
        .iter()
        .map(|l| {
            String::from_utf8_lossy(l)
                .trim_end_matches('\r')
                .to_string()
        })
        .collect();
    assert_eq!(lines[..2], ["/dev/pts/0".to_string(), "40 100".to_string()]);
    fx.delete_and_clean(&shim);
}

fn stdin_and_close_io(runtime: Runtime) {
    let fx = Fixture::sh(runtime, "cat; echo cat done; exit 2");
    let shim = fx.start_shim();
    let stdin = fx.stdin_fifo();
    shim.create(&stdin_io(&stdin)).unwrap();
    let writer = std::thread::spawn({
        let stdin = stdin.clone();
        move || std::fs::OpenOptions::new().write(true).open(stdin).unwrap()
    });
    shim.start("").unwrap();
    let mut w = writer.join().unwrap();
    std::io::Write::write_all(&mut w, b"from stdin\n").unwrap();
    wait_until(Duration::from_secs(10), "echoed input", || {
        !join_lines(&parse_log(&fx.log_path()), Stream::Stdout).is_empty()
    });
    // The FIFO's writer is still open: only CloseIO ends cat's input.
    shim.close_stdin("").unwrap();
    assert_eq!(shim.wait("").unwrap().code, 2);
    drop(w);
    let out = join_lines(&parse_log(&fx.log_path()), Stream::Stdout);
    assert_eq!(out, vec![b"from stdin".to_vec(), b"cat done".to_vec()]);
    fx.delete_and_clean(&shim);
}

fn delete_unstarted(runtime: Runtime) {
    let fx = Fixture::new(runtime, &["sleep", "1000"]);
    let shim = fx.start_shim();
    let pid = shim.create(&ProcessIo::default()).unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    // Delete without start: the runtime's `delete --force` ends the waiting init.
    let del = shim.delete("").unwrap();
    assert_eq!(del.code, 137);
    assert!(shim.state("").unwrap_err().is_not_found());
    shim.shutdown(false).unwrap();
    fx.assert_clean();
}

fn kill_all(runtime: Runtime) {
    let fx = Fixture::sh(runtime, "sleep 1000 & sleep 1000 & wait");
    let shim = fx.start_running();
    wait_until(Duration::from_secs(10), "three processes", || {
        shim.pids().unwrap().len() == 3
    });
    shim.kill("", 9, true).unwrap();
    assert_eq!(shim.wait("").unwrap().code, 137);
    shim.delete("").unwrap();
    // Shutdown while nothing runs: the shim goes away.
    shim.shutdown(false).unwrap();
    assert!(!shim.is_alive());
    fx.assert_clean();
}

fn oom_killed(runtime: Runtime) {
    // The shell holds the whole command substitution in memory: far over 32 MiB.
    let fx = Fixture::sh(
        runtime,
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
    );
    fx.patch_config(|v| {
        v["linux"]["resources"] = serde_json::json!({"memory": {"limit": 33554432}});
    });
    let shim = fx.start_running();
    assert_eq!(shim.wait("").unwrap().code, 137);
    let rec = client::read_exit_file(&fx.dir.path().join("exit.json"))
        .unwrap()
        .unwrap();
    assert!(rec.oom_killed, "{rec:?}");
    assert!(join_lines(&parse_log(&fx.log_path()), Stream::Stdout).is_empty());
    fx.delete_and_clean(&shim);
}
