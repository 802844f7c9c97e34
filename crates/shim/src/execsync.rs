//! ExecSync: runs a process in the container (`runc exec --detach`) with its stdout and
//! stderr on pipes of its own, captures each up to a cap, SIGKILLs the process at the
//! timeout and answers its exit code and output. Nothing is left in the shim afterwards:
//! the capture threads end with the process's output, the scratch files are removed.

use std::fs::File;
use std::io::Read;
use std::process::Stdio;
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use crate::procs::{DRAIN_LIMIT, Scratch};
use crate::proto::shim::{ExecSyncRequest, ExecSyncResponse};
use crate::runtime::{self, Launch, Stdio3};
use crate::service::{Shim, ShimError};
use crate::{reaper, sys};

/// The cap of each stream when the request gives none.
const DEFAULT_OUTPUT_LIMIT: usize = 16 << 20;

/// Runs the ExecSync whose id the caller holds in the process table.
pub(crate) fn run(shim: &Shim, req: &ExecSyncRequest) -> Result<ExecSyncResponse, ShimError> {
    let limit = output_limit(req.output_limit);
    let spec_file = shim.scratch(Scratch::ExecSyncSpec(&req.exec_id));
    let pid_file = shim.scratch(Scratch::ExecSyncPid(&req.exec_id));
    std::fs::write(&spec_file, &req.process_json).map_err(ShimError::WriteSpec)?;
    let ((out_r, out_w), (err_r, err_w)) = match (sys::pipe(), sys::pipe()) {
        (Ok(o), Ok(e)) => (o, e),
        (Err(e), _) | (_, Err(e)) => {
            let _ = std::fs::remove_file(&spec_file);
            return Err(ShimError::Pipes(e));
        }
    };
    let out_rx = capture(out_r, limit);
    let err_rx = capture(err_r, limit);
    let stdio = Stdio3 {
        stdin: Stdio::null(),
        stdout: Stdio::from(out_w),
        stderr: Stdio::from(err_w),
    };
    let what = Launch::Exec {
        process_file: &spec_file,
    };
    let started = shim
        .cfg
        .runtime
        .launch(&shim.cfg.id, what, &pid_file, None, stdio);
    let _ = std::fs::remove_file(&spec_file);
    started?;
    let pid = runtime::take_pid_file(&pid_file).map_err(ShimError::ExecSyncPidFile)?;
    let (status, timed_out) = wait_or_kill(pid, req.timeout_ms);
    let (stdout, stdout_truncated) = out_rx.recv_timeout(DRAIN_LIMIT).unwrap_or_default();
    let (stderr, stderr_truncated) = err_rx.recv_timeout(DRAIN_LIMIT).unwrap_or_default();
    Ok(ExecSyncResponse {
        exit_code: i32::try_from(sys::exit_code(status)).unwrap_or(255),
        stdout,
        stderr,
        timed_out,
        stdout_truncated,
        stderr_truncated,
        ..Default::default()
    })
}

/// The cap per stream: the request's, or the default for 0 (or one too big to hold).
fn output_limit(requested: u64) -> usize {
    match usize::try_from(requested) {
        Ok(0) | Err(_) => DEFAULT_OUTPUT_LIMIT,
        Ok(n) => n,
    }
}

/// Waits for `pid` (at most `timeout_ms`, 0: no limit; then SIGKILL and wait again).
/// Returns its wait status and whether it was killed at the timeout.
fn wait_or_kill(pid: i32, timeout_ms: u64) -> (i32, bool) {
    if timeout_ms == 0 {
        return (reaper::wait(pid), false);
    }
    match reaper::wait_timeout(pid, Duration::from_millis(timeout_ms)) {
        Some(status) => (status, false),
        None => {
            let _ = sys::kill(pid, libc::SIGKILL);
            (reaper::wait(pid), true)
        }
    }
}

/// Reads `src` to its end in a thread; the receiver gets at most `limit` bytes of it and
/// whether more came (empty output if the thread cannot start).
fn capture(src: File, limit: usize) -> Receiver<(Vec<u8>, bool)> {
    let (tx, rx) = mpsc::channel();
    let spawned = sys::spawn_small("capture", move || {
        let _ = tx.send(read_capped(src, limit));
    });
    if spawned.is_err() {
        let (tx, rx) = mpsc::channel();
        let _ = tx.send((Vec::new(), false));
        return rx;
    }
    rx
}

/// Reads `src` until EOF or an error, keeping the first `limit` bytes; the flag says
/// whether anything was dropped.
fn read_capped(mut src: impl Read, limit: usize) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut truncated = false;
    let mut buf = [0u8; 8192];
    loop {
        match src.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = limit.saturating_sub(out.len());
                if n > room {
                    truncated = true;
                }
                out.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    (out, truncated)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn output_limits() {
        assert_eq!(output_limit(0), DEFAULT_OUTPUT_LIMIT);
        assert_eq!(output_limit(1), 1);
        assert_eq!(output_limit(1 << 30), 1 << 30);
    }

    #[test]
    fn captures_up_to_the_limit() {
        let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(read_capped(&data[..], 20_000), (data.clone(), false));
        assert_eq!(read_capped(&data[..], 1 << 20), (data.clone(), false));
        assert_eq!(
            read_capped(&data[..], 9_000),
            (data[..9_000].to_vec(), true)
        );
        assert_eq!(read_capped(&data[..], 0), (Vec::new(), true));
        assert_eq!(read_capped(&[][..], 0), (Vec::new(), false));
    }

    #[test]
    fn capture_reads_a_pipe_in_a_thread() {
        use std::io::Write;
        let (r, mut w) = sys::pipe().unwrap();
        let rx = capture(r, 4);
        w.write_all(b"hello").unwrap();
        drop(w);
        let got = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(got, (b"hell".to_vec(), true));
    }
}
