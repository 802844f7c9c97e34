//! Attach (the init's output teed to FIFOs next to the CRI log) and the init's stdin FIFO
//! that outlives its writers, under runc and crun.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::*;
use crius_shim::client::{self, Error, ProcessIo, Shim};
use crius_shim::crilog::Stream;

crius_testkit::runtime_matrix!(sync:
    two_attachers_and_the_log,
    attacher_leaves_midway,
    stalled_attacher_is_dropped,
    attach_terminal,
    stdin_survives_writers,
    attacher_gets_eof_at_exit,
    attach_errors,
    failed_create_leaves_no_stdin_copier,
    exec_stdin_never_opened,
);

const COUNTER: &str = "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.05; done";
const LIMIT: Duration = Duration::from_secs(20);

/// The read end of an attach FIFO, opened before Attach as the caller must.
struct Fifo {
    path: PathBuf,
    nb: File,
}

impl Fifo {
    fn new(fx: &Fixture, name: &str) -> Fifo {
        let path = fx.dir.path().join(format!("{name}.fifo"));
        mkfifo(&path);
        // Non-blocking: there is no writer yet.
        let nb = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        Fifo { path, nb }
    }

    /// After a successful Attach (the shim holds the write end): a blocking read end
    /// instead, read in a thread until EOF, or until `stop_after` lines when given
    /// (then the read end is closed: the caller went away).
    fn read(self, stop_after: Option<usize>) -> Reader {
        let f = File::open(&self.path).unwrap();
        drop(self.nb);
        let buf = Arc::new(Mutex::new(Vec::new()));
        let out = Arc::clone(&buf);
        let handle = std::thread::spawn(move || {
            let mut f = f;
            let mut chunk = [0u8; 65536];
            loop {
                let n = f.read(&mut chunk).unwrap();
                if n == 0 {
                    return true;
                }
                let mut b = out.lock().unwrap();
                b.extend_from_slice(&chunk[..n]);
                if stop_after.is_some_and(|k| b.iter().filter(|c| **c == b'\n').count() >= k) {
                    return false;
                }
            }
        });
        Reader { buf, handle }
    }
}

struct Reader {
    buf: Arc<Mutex<Vec<u8>>>,
    /// True when the reader saw EOF; false when it stopped early.
    handle: JoinHandle<bool>,
}

impl Reader {
    fn lines(&self) -> usize {
        self.buf
            .lock()
            .unwrap()
            .iter()
            .filter(|c| **c == b'\n')
            .count()
    }

    /// Waits for the reader to end; returns what it read and whether it saw EOF.
    fn finish(self) -> (Vec<u8>, bool) {
        let eof = self.handle.join().unwrap();
        (
            Arc::try_unwrap(self.buf).unwrap().into_inner().unwrap(),
            eof,
        )
    }
}

/// What the tests look at in the shim process.
struct ShimProc(u32);

impl ShimProc {
    fn of(shim: &Shim) -> ShimProc {
        ShimProc(shim.connect_info().unwrap().0)
    }

    fn threads(&self) -> Vec<String> {
        std::fs::read_dir(format!("/proc/{}/task", self.0))
            .unwrap()
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
            .map(|c| c.trim().to_string())
            .collect()
    }

    fn threads_named(&self, name: &str) -> usize {
        self.threads().iter().filter(|t| *t == name).count()
    }

    /// Waits until exactly `n` threads have this name (a new thread names itself only
    /// once it runs).
    fn wait_threads(&self, name: &str, n: usize) {
        wait_until(LIMIT, &format!("{n} {name} threads"), || {
            self.threads_named(name) == n
        });
    }

    /// CPU time (user + system, in clock ticks) used so far by the threads with this name.
    fn cpu_ticks(&self, name: &str) -> u64 {
        let mut total = 0;
        for t in std::fs::read_dir(format!("/proc/{}/task", self.0))
            .unwrap()
            .flatten()
        {
            let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
                continue;
            };
            let Some((head, rest)) = stat.rsplit_once(") ") else {
                continue;
            };
            if !head.ends_with(&format!("({name}")) {
                continue;
            }
            let f: Vec<&str> = rest.split_whitespace().collect();
            total += f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        }
        total
    }

    fn fds(&self) -> Vec<String> {
        std::fs::read_dir(format!("/proc/{}/fd", self.0))
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .map(|p| p.display().to_string())
            .collect()
    }

    /// (the shim's own worker threads, open fds). ttrpc's threads are left out: its
    /// pool of `client_handler` workers may grow by one whenever a request arrives before
    /// the previous worker is back waiting, so their number is not steady.
    fn counts(&self) -> (usize, usize) {
        const OURS: &[&str] = &[
            "attach",
            "copy-in",
            "copy-out",
            "exit-watch",
            "console",
            "capture",
        ];
        let ours = self
            .threads()
            .iter()
            .filter(|t| OURS.contains(&t.as_str()))
            .count();
        (ours, self.fds().len())
    }

    /// Attach and stdin plumbing the shim still holds: threads, FIFOs, eventfds.
    fn plumbing(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .threads()
            .into_iter()
            .filter(|t| t == "attach" || t == "copy-in")
            .collect();
        v.extend(
            self.fds()
                .into_iter()
                .filter(|f| f.ends_with(".fifo") || f.contains("eventfd")),
        );
        v
    }

    fn assert_no_plumbing(&self) {
        wait_until(LIMIT, "attach threads and fds to go", || {
            self.plumbing().is_empty()
        });
    }

    /// Thread and fd counts come back to `base` (taken while the container ran and
    /// nothing was attached).
    fn assert_back_to(&self, base: (usize, usize)) {
        let deadline = std::time::Instant::now() + LIMIT;
        while self.counts() != base {
            assert!(
                std::time::Instant::now() < deadline,
                "shim threads/fds {:?} != {base:?}: {:?} {:?}",
                self.counts(),
                self.threads(),
                self.fds()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn log_lines(fx: &Fixture, stream: Stream) -> Vec<Vec<u8>> {
    join_lines(&parse_log(&fx.log_path()), stream)
}

/// [`log_lines`] of what is whole so far, for polling.
fn log_lines_so_far(fx: &Fixture, stream: Stream) -> Vec<Vec<u8>> {
    join_lines(&parse_log_so_far(&fx.log_path()), stream)
}

/// Checks that the log holds `prefix 0`, `prefix 1`, ... with none missing, and that
/// `got` (an attacher's raw bytes) is exactly the log's lines from some point to the end,
/// each with its newline. Returns the index of the attacher's first line.
fn check_suffix(log: &[Vec<u8>], prefix: &str, got: &[u8]) -> usize {
    for (i, l) in log.iter().enumerate() {
        assert_eq!(
            String::from_utf8_lossy(l),
            format!("{prefix} {i}"),
            "log line {i}"
        );
    }
    assert!(!got.is_empty(), "the attacher got nothing");
    let first = got.split(|b| *b == b'\n').next().unwrap();
    let start = log
        .iter()
        .position(|l| l == first)
        .unwrap_or_else(|| panic!("{:?} is not in the log", String::from_utf8_lossy(first)));
    let want: Vec<u8> = log[start..]
        .iter()
        .flat_map(|l| l.iter().copied().chain([b'\n']))
        .collect();
    assert_eq!(String::from_utf8_lossy(got), String::from_utf8_lossy(&want));
    start
}

fn finish(fx: Fixture, shim: &Shim, sp: &ShimProc) {
    sp.assert_no_plumbing();
    fx.delete_and_clean(shim);
}

/// Two attachers (one on both streams, one on stdout) get the same raw bytes, and the
/// log still has every line.
fn two_attachers_and_the_log(runtime: Runtime) {
    let script = "i=0; while true; do echo line $i; echo err $i >&2; i=$((i+1)); sleep 0.05; done";
    let fx = Fixture::sh(runtime, script);
    let shim = fx.start_running();
    wait_until(LIMIT, "first lines", || {
        log_lines_so_far(&fx, Stream::Stdout).len() >= 3
    });
    let sp = ShimProc::of(&shim);

    let (a_out, a_err, b_out) = (
        Fifo::new(&fx, "a-out"),
        Fifo::new(&fx, "a-err"),
        Fifo::new(&fx, "b-out"),
    );
    shim.attach(Some(&a_out.path), Some(&a_err.path)).unwrap();
    let (a_out, a_err) = (a_out.read(None), a_err.read(None));
    wait_until(LIMIT, "a few lines for a", || a_out.lines() >= 3);
    shim.attach(Some(&b_out.path), None).unwrap();
    let b_out = b_out.read(None);
    sp.wait_threads("attach", 3);
    wait_until(LIMIT, "lines for b", || b_out.lines() >= 10);

    shim.kill("", 9, false).unwrap();
    assert_eq!(shim.wait("").unwrap().code, 137);
    // Every attacher gets EOF once the container is gone.
    let (a_out, a_eof) = a_out.finish();
    let (a_err, _) = a_err.finish();
    let (b_out, b_eof) = b_out.finish();
    assert!(a_eof && b_eof);
    let out = log_lines(&fx, Stream::Stdout);
    let a_start = check_suffix(&out, "line", &a_out);
    let b_start = check_suffix(&out, "line", &b_out);
    assert!(
        b_start >= a_start + 3,
        "b attached later: {a_start} {b_start}"
    );
    check_suffix(&log_lines(&fx, Stream::Stderr), "err", &a_err);
    // No stderr record carried stdout bytes or the other way round; attachers got raw
    // bytes, not log records.
    assert!(a_out.starts_with(b"line "));
    assert!(a_err.starts_with(b"err "));
    sp.assert_no_plumbing();
    finish(fx, &shim, &sp);
}

/// An attacher that closes its FIFO is dropped; the other one and the log go on.
fn attacher_leaves_midway(runtime: Runtime) {
    let fx = Fixture::sh(runtime, COUNTER);
    let shim = fx.start_running();
    wait_until(LIMIT, "first lines", || {
        !log_lines_so_far(&fx, Stream::Stdout).is_empty()
    });
    let sp = ShimProc::of(&shim);
    let base = sp.counts();
    let (a, b) = (Fifo::new(&fx, "a"), Fifo::new(&fx, "b"));
    shim.attach(Some(&a.path), None).unwrap();
    shim.attach(Some(&b.path), None).unwrap();
    let a = a.read(Some(5));
    let b = b.read(None);
    let (a, a_eof) = a.finish();
    assert!(!a_eof);
    // a's read end is closed: its writer thread and fds go, even between two lines.
    sp.wait_threads("attach", 1);
    let at_leave = b.lines();
    wait_until(LIMIT, "b to go on", || b.lines() >= at_leave + 10);
    let log_now = log_lines_so_far(&fx, Stream::Stdout).len();
    // c's reader is closed right after the call: its writer goes away by itself too.
    shim.attach(Some(&Fifo::new(&fx, "c").path), None).unwrap();
    // Only b is left: one thread, its FIFO and its eventfd.
    sp.assert_back_to((base.0 + 1, base.1 + 2));
    sp.wait_threads("attach", 1);

    shim.kill("", 9, false).unwrap();
    assert_eq!(shim.wait("").unwrap().code, 137);
    let (b, b_eof) = b.finish();
    assert!(b_eof);
    let out = log_lines(&fx, Stream::Stdout);
    assert!(out.len() >= log_now);
    let a_start = check_suffix(&out, "line", &b);
    // a got the same first lines as b.
    let a_lines: Vec<&[u8]> = a.split(|c| *c == b'\n').filter(|l| !l.is_empty()).collect();
    assert!(a_lines.len() >= 5);
    assert_eq!(a_lines[0], out[a_start].as_slice());
    finish(fx, &shim, &sp);
}

/// An attacher that never reads is dropped once it is 1 MiB behind; the log and a
/// reading attacher miss nothing. Also: attaching to a created, not yet started
/// container gets its output from the first byte.
fn stalled_attacher_is_dropped(runtime: Runtime) {
    // 30000 lines of ~90 bytes (2.7 MB), in bursts of 100 lines, then idle.
    let script = "pad=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; \
                  i=0; while [ $i -lt 30000 ]; do echo line $i $pad; i=$((i+1)); \
                  if [ $((i % 100)) -eq 0 ]; then sleep 0.01; fi; done; echo done; sleep 1000";
    let fx = Fixture::sh(runtime, script);
    let shim = fx.start_shim();
    shim.create(&ProcessIo::default()).unwrap();
    let sp = ShimProc::of(&shim);
    let (stalled, reader) = (Fifo::new(&fx, "stalled"), Fifo::new(&fx, "reader"));
    shim.attach(Some(&stalled.path), None).unwrap();
    shim.attach(Some(&reader.path), None).unwrap();
    let reader = reader.read(None);
    shim.start("").unwrap();
    wait_until(Duration::from_secs(60), "all output", || {
        log_lines_so_far(&fx, Stream::Stdout)
            .last()
            .map(Vec::as_slice)
            == Some(b"done")
    });
    // The stalled attacher was dropped.
    sp.wait_threads("attach", 1);
    // It got what its pipe held, then EOF: the shim closed its end.
    let mut got = Vec::new();
    let mut stalled = stalled.nb;
    let mut chunk = [0u8; 65536];
    loop {
        match stalled.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => panic!("the FIFO is still open"),
            Err(e) => panic!("{e}"),
        }
    }
    let log = log_lines(&fx, Stream::Stdout);
    assert_eq!(log.len(), 30001);
    let all: Vec<u8> = log
        .iter()
        .flat_map(|l| l.iter().copied().chain([b'\n']))
        .collect();
    assert!(
        !got.is_empty() && got.len() < all.len() / 2,
        "{}",
        got.len()
    );
    assert!(all.starts_with(&got));
    shim.kill("", 9, false).unwrap();
    assert_eq!(shim.wait("").unwrap().code, 137);
    let (seen, eof) = reader.finish();
    assert!(eof);
    assert_eq!(seen.len(), all.len());
    assert!(
        seen == all,
        "the reading attacher got every byte from the start"
    );
    finish(fx, &shim, &sp);
}

/// With a terminal, the attacher gets the pty's raw output (CR LF line ends) on stdout;
/// the stderr FIFO is never opened.
fn attach_terminal(runtime: Runtime) {
    let fx = Fixture::new(runtime, &[]);
    fx.write_config(&["sh", "-c", COUNTER], true);
    let shim = fx.start_shim();
    shim.create(&ProcessIo {
        terminal: true,
        ..Default::default()
    })
    .unwrap();
    shim.start("").unwrap();
    wait_until(LIMIT, "first lines", || {
        !log_lines_so_far(&fx, Stream::Stdout).is_empty()
    });
    let sp = ShimProc::of(&shim);
    let (out, errf) = (Fifo::new(&fx, "out"), Fifo::new(&fx, "err"));
    shim.attach(Some(&out.path), Some(&errf.path)).unwrap();
    sp.wait_threads("attach", 1);
    assert!(!sp.fds().iter().any(|f| f.ends_with("err.fifo")));
    let out = out.read(None);
    wait_until(LIMIT, "tty lines", || out.lines() >= 5);
    shim.kill("", 9, false).unwrap();
    assert_eq!(shim.wait("").unwrap().code, 137);
    let (got, eof) = out.finish();
    assert!(eof);
    assert!(got.windows(2).any(|w| w == b"\r\n"), "raw pty output");
    // The log holds the same lines (with their CR, as the pty wrote them).
    let log: Vec<Vec<u8>> = log_lines(&fx, Stream::Stdout);
    let mut want_tail = Vec::new();
    let first = got.split(|b| *b == b'\n').next().unwrap();
    let start = log.iter().position(|l| l == first).unwrap();
    for l in &log[start..] {
        want_tail.extend_from_slice(l);
        want_tail.push(b'\n');
    }
    assert_eq!(got, want_tail);
    // Nothing ever wrote the stderr FIFO: its reader sees no data (and no writer).
    let mut e = errf.nb;
    let mut b = [0u8; 16];
    assert_eq!(e.read(&mut b).unwrap(), 0);
    finish(fx, &shim, &sp);
}

/// In crius mode the init's stdin FIFO is opened O_RDWR: writers come and go without
/// ending the container's input; only CloseIO does.
fn stdin_survives_writers(runtime: Runtime) {
    let fx = Fixture::sh(runtime, "cat; echo cat done");
    let shim = fx.start_shim();
    let stdin = fx.stdin_fifo();
    // No writer is needed for Create to return.
    shim.create(&stdin_io(&stdin)).unwrap();
    shim.start("").unwrap();
    let sp = ShimProc::of(&shim);
    sp.wait_threads("copy-in", 1);
    let out = Fifo::new(&fx, "out");
    shim.attach(Some(&out.path), None).unwrap();
    let out = out.read(None);
    let write = |s: &[u8]| {
        // The shim holds a reader: a plain blocking open returns at once.
        let mut w = OpenOptions::new().write(true).open(&stdin).unwrap();
        w.write_all(s).unwrap();
    };
    write(b"a\n");
    wait_until(LIMIT, "a echoed", || out.lines() >= 1);
    // The writer closed: cat still runs, and a new writer is heard. Meanwhile the
    // copy-in thread sleeps in poll (a spin would burn the whole half second).
    let ticks = sp.cpu_ticks("copy-in");
    std::thread::sleep(Duration::from_millis(500));
    assert!(sp.cpu_ticks("copy-in") <= ticks + 5, "copy-in is spinning");
    assert_eq!(
        shim.state("").unwrap().status,
        client::ProcessStatus::Running
    );
    write(b"b\n");
    wait_until(LIMIT, "b echoed", || out.lines() >= 2);
    // What a writer put in just before CloseIO still reaches the container.
    write(b"c\n");
    shim.close_stdin("").unwrap();
    assert_eq!(shim.wait("").unwrap().code, 0);
    // The copy-in thread ended at CloseIO.
    sp.wait_threads("copy-in", 0);
    let (got, eof) = out.finish();
    assert!(eof);
    assert_eq!(String::from_utf8_lossy(&got), "a\nb\nc\ncat done\n");
    assert_eq!(
        log_lines(&fx, Stream::Stdout),
        vec![
            b"a".to_vec(),
            b"b".to_vec(),
            b"c".to_vec(),
            b"cat done".to_vec()
        ]
    );
    finish(fx, &shim, &sp);
}

/// The attacher's FIFO reads EOF when the container exits by itself; attaching after
/// that fails.
fn attacher_gets_eof_at_exit(runtime: Runtime) {
    let fx = Fixture::sh(runtime, "sleep 1; echo bye; echo err >&2; exit 3");
    let shim = fx.start_running();
    let sp = ShimProc::of(&shim);
    let (out, errf) = (Fifo::new(&fx, "out"), Fifo::new(&fx, "err"));
    shim.attach(Some(&out.path), Some(&errf.path)).unwrap();
    let (out, errf) = (out.read(None), errf.read(None));
    let ((o, o_eof), (e, e_eof)) = (out.finish(), errf.finish());
    assert!(o_eof && e_eof);
    assert_eq!((o.as_slice(), e.as_slice()), (&b"bye\n"[..], &b"err\n"[..]));
    assert_eq!(shim.wait("").unwrap().code, 3);
    // Everything attach made is gone.
    sp.assert_no_plumbing();
    let late = Fifo::new(&fx, "late");
    match shim.attach(Some(&late.path), None) {
        Err(Error::Rpc { code, message }) => {
            assert_eq!(code, ttrpc::Code::FAILED_PRECONDITION);
            assert_eq!(message, "container is not running");
        }
        other => panic!("attach after exit: {other:?}"),
    }
    finish(fx, &shim, &sp);
}

fn rpc_code(r: Result<(), Error>) -> (ttrpc::Code, String) {
    match r {
        Err(Error::Rpc { code, message }) => (code, message),
        other => panic!("expected an RPC error, got {other:?}"),
    }
}

/// The refusals: no reader, not a FIFO, no container, and a shim in containerd mode.
fn attach_errors(runtime: Runtime) {
    let fx = Fixture::new(runtime, &["sleep", "1000"]);
    let shim = fx.start_shim();
    let f = Fifo::new(&fx, "early");
    let (code, _) = rpc_code(shim.attach(Some(&f.path), None));
    assert_eq!(code, ttrpc::Code::NOT_FOUND, "before Create");
    shim.create(&ProcessIo::default()).unwrap();
    shim.start("").unwrap();
    let sp = ShimProc::of(&shim);
    let base = sp.counts();
    // The caller's read end is gone (ENXIO).
    let gone = Fifo::new(&fx, "gone");
    let path = gone.path.clone();
    drop(gone);
    let (code, msg) = rpc_code(shim.attach(Some(&path), None));
    assert_eq!(code, ttrpc::Code::FAILED_PRECONDITION, "{msg}");
    assert!(msg.contains("no reader"), "{msg}");
    // A good stdout with a bad stderr attaches nothing.
    let good = Fifo::new(&fx, "good");
    let (code, msg) = rpc_code(shim.attach(Some(&good.path), Some(&path)));
    assert_eq!(code, ttrpc::Code::FAILED_PRECONDITION, "{msg}");
    // Not a FIFO; no such path.
    let plain = fx.dir.path().join("plain");
    std::fs::write(&plain, b"").unwrap();
    let (code, msg) = rpc_code(shim.attach(Some(&plain), None));
    assert_eq!(code, ttrpc::Code::INVALID_ARGUMENT, "{msg}");
    let (code, msg) = rpc_code(shim.attach(Some(&fx.dir.path().join("nope")), None));
    assert_eq!(code, ttrpc::Code::INVALID_ARGUMENT, "{msg}");
    // Asking for nothing is allowed (and does nothing).
    shim.attach(None, None).unwrap();
    assert!(sp.plumbing().is_empty(), "{:?}", sp.plumbing());
    assert_eq!(sp.counts(), base);
    drop(good);
    shim.kill("", 9, false).unwrap();
    shim.wait("").unwrap();
    finish(fx, &shim, &sp);

    // containerd mode (no CRI log): Attach is refused.
    let fx = Fixture::new(runtime, &["sleep", "1000"]);
    let shim = client::start(&client::StartOptions {
        log_path: None,
        ..fx.start_options()
    })
    .unwrap();
    shim.create(&ProcessIo::default()).unwrap();
    shim.start("").unwrap();
    let f = Fifo::new(&fx, "cd");
    let (code, msg) = rpc_code(shim.attach(Some(&f.path), None));
    assert_eq!(code, ttrpc::Code::FAILED_PRECONDITION);
    assert!(msg.contains("crius mode"), "{msg}");
    drop(f);
    shim.kill("", 9, false).unwrap();
    shim.wait("").unwrap();
    let sp = ShimProc::of(&shim);
    finish(fx, &shim, &sp);
}

/// A Create that fails after the shim opened the stdin FIFO leaves nothing behind.
fn failed_create_leaves_no_stdin_copier(runtime: Runtime) {
    let fx = Fixture::new(runtime, &["cat"]);
    fx.patch_config(|v| v["root"]["path"] = serde_json::json!("no-such-rootfs"));
    let shim = fx.start_shim();
    let stdin = fx.stdin_fifo();
    let io = stdin_io(&stdin);
    shim.create(&io).unwrap_err();
    let sp = ShimProc::of(&shim);
    sp.assert_no_plumbing();
    // A stdin path that does not exist fails Create (it is opened at once).
    std::fs::remove_file(&stdin).unwrap();
    fx.patch_config(|v| v["root"]["path"] = serde_json::json!("rootfs"));
    let (code, msg) = match shim.create(&io) {
        Err(Error::Rpc { code, message }) => (code, message),
        other => panic!("{other:?}"),
    };
    assert_eq!(code, ttrpc::Code::INTERNAL, "{msg}");
    assert!(msg.contains("stdio"), "{msg}");
    sp.assert_no_plumbing();
    shim.shutdown(false).unwrap();
    fx.assert_clean();
}

/// An exec's stdin FIFO is opened O_RDONLY: EOF once its writers are gone. If no writer
/// ever comes, the copy-in thread still ends when the exec does.
fn exec_stdin_never_opened(runtime: Runtime) {
    let fx = Fixture::new(runtime, &["sleep", "1000"]);
    let shim = fx.start_running();
    let sp = ShimProc::of(&shim);
    let stdin = fx.dir.path().join("exec-stdin.fifo");
    mkfifo(&stdin);
    let io = stdin_io(&stdin);
    shim.exec("e1", &process_json(&["sleep", "0.3"]), &io)
        .unwrap();
    shim.start("e1").unwrap();
    sp.wait_threads("copy-in", 1);
    assert_eq!(shim.wait("e1").unwrap().code, 0);
    shim.delete("e1").unwrap();
    sp.assert_no_plumbing();
    // And one that is given input and closed the containerd way: EOF ends its stdin.
    shim.exec("e2", &process_json(&["cat"]), &io).unwrap();
    shim.start("e2").unwrap();
    let mut w = OpenOptions::new().write(true).open(&stdin).unwrap();
    w.write_all(b"x\n").unwrap();
    drop(w);
    assert_eq!(shim.wait("e2").unwrap().code, 0);
    shim.delete("e2").unwrap();
    sp.assert_no_plumbing();
    shim.kill("", 9, false).unwrap();
    shim.wait("").unwrap();
    finish(fx, &shim, &sp);
}
