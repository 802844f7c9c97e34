//! Driving the OCI runtime binary (runc or crun; both take the same commands).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::reaper;
use crate::sys;

/// Why a runtime command failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RuntimeError {
    /// The binary could not be started.
    #[error("cannot run {binary}: {source}")]
    Spawn {
        binary: String,
        source: std::io::Error,
    },
    /// The binary ran and failed.
    #[error("{binary} {command} failed (exit code {code}): {message}")]
    Failed {
        binary: String,
        command: String,
        code: u32,
        message: String,
    },
}

/// The container's standard streams as given to `runc create` / `runc exec`.
pub(crate) struct Stdio3 {
    pub(crate) stdin: Stdio,
    pub(crate) stdout: Stdio,
    pub(crate) stderr: Stdio,
}

impl Stdio3 {
    pub(crate) fn null() -> Self {
        Stdio3 {
            stdin: Stdio::null(),
            stdout: Stdio::null(),
            stderr: Stdio::null(),
        }
    }
}

/// What [`Runtime::launch`] starts.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Launch<'a> {
    /// `create`: the container's init, from the bundle's `config.json`.
    Create { bundle: &'a Path },
    /// `exec --detach`: another process, from an OCI `process` JSON file.
    Exec { process_file: &'a Path },
}

impl Launch<'_> {
    fn command(self) -> &'static str {
        match self {
            Launch::Create { .. } => "create",
            Launch::Exec { .. } => "exec",
        }
    }
}

pub(crate) struct Runtime {
    pub(crate) binary: PathBuf,
    pub(crate) root: PathBuf,
    /// `--log` file of the runtime (JSON lines); its last error is the message we report.
    pub(crate) log: PathBuf,
}

impl Runtime {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&self.log)
            .arg("--log-format")
            .arg("json")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    fn name(&self) -> String {
        self.binary.display().to_string()
    }

    /// The last error the runtime logged, or `fallback`.
    fn last_error(&self, fallback: &[u8]) -> String {
        let mut msg = String::from_utf8_lossy(fallback).trim().to_string();
        if let Ok(text) = std::fs::read_to_string(&self.log) {
            for line in text.lines().rev() {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                    if v.get("level").and_then(|l| l.as_str()) == Some("error") {
                        if let Some(m) = v.get("msg").and_then(|m| m.as_str()) {
                            msg = m.to_string();
                            break;
                        }
                    }
                }
            }
        }
        if msg.is_empty() {
            "no error message".to_string()
        } else {
            msg
        }
    }

    /// Starts `cmd` through the reaper (so that its exit is not lost).
    fn spawn(&self, cmd: &mut Command) -> Result<Child, RuntimeError> {
        reaper::spawn(cmd).map_err(|source| RuntimeError::Spawn {
            binary: self.name(),
            source,
        })
    }

    /// Waits for a command started by [`Runtime::spawn`]; a non-zero exit is `Failed`,
    /// with the runtime's logged error or else `stderr`.
    fn finish(&self, child: Child, what: &str, stderr: &[u8]) -> Result<(), RuntimeError> {
        let pid = i32::try_from(child.id()).unwrap_or(-1);
        drop(child);
        let code = sys::exit_code(reaper::wait(pid));
        if code != 0 {
            return Err(RuntimeError::Failed {
                binary: self.name(),
                command: what.to_string(),
                code,
                message: self.last_error(stderr),
            });
        }
        Ok(())
    }

    /// Runs one command to completion; returns its stdout.
    fn run(
        &self,
        mut cmd: Command,
        what: &str,
        input: Option<&[u8]>,
    ) -> Result<Vec<u8>, RuntimeError> {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        if input.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = self.spawn(&mut cmd)?;
        drop(cmd);
        if let (Some(data), Some(mut w)) = (input, child.stdin.take()) {
            let _ = w.write_all(data);
        }
        let mut out = Vec::new();
        let mut err = Vec::new();
        if let Some(mut o) = child.stdout.take() {
            let _ = o.read_to_end(&mut out);
        }
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_end(&mut err);
        }
        self.finish(child, what, &err)?;
        Ok(out)
    }

    /// Starts a process of the container (`create` or `exec --detach`) with the
    /// container's stdio, its pid written to `pid_file`, and a pty through
    /// `console_socket` when given. Returns when the runtime has exited, leaving the
    /// process behind, reparented to the shim.
    pub(crate) fn launch(
        &self,
        id: &str,
        what: Launch<'_>,
        pid_file: &Path,
        console_socket: Option<&Path>,
        stdio: Stdio3,
    ) -> Result<(), RuntimeError> {
        let mut cmd = match what {
            Launch::Create { bundle } => {
                let mut c = self.command(&["create", "--bundle"]);
                c.arg(bundle).current_dir(bundle);
                c
            }
            Launch::Exec { process_file } => {
                let mut c = self.command(&["exec", "--detach", "--process"]);
                c.arg(process_file);
                c
            }
        };
        cmd.arg("--pid-file").arg(pid_file);
        if let Some(s) = console_socket {
            cmd.arg("--console-socket").arg(s);
        }
        cmd.arg(id)
            .stdin(stdio.stdin)
            .stdout(stdio.stdout)
            .stderr(stdio.stderr);
        let child = self.spawn(&mut cmd)?;
        // Drop our copies of the container's pipe ends now, so EOF can reach the readers.
        drop(cmd);
        let res = self.finish(child, what.command(), b"");
        // runc has left the container's process behind, reparented to us.
        reaper::note_child();
        res
    }

    pub(crate) fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.run(self.command(&["start", id]), "start", None)
            .map(|_| ())
    }

    pub(crate) fn kill(&self, id: &str, signal: u32, all: bool) -> Result<(), RuntimeError> {
        let sig = signal.to_string();
        let cmd = if all {
            self.command(&["kill", "--all", id, &sig])
        } else {
            self.command(&["kill", id, &sig])
        };
        self.run(cmd, "kill", None).map(|_| ())
    }

    pub(crate) fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        self.run(self.command(&["delete", "--force", id]), "delete", None)
            .map(|_| ())
    }

    pub(crate) fn update(&self, id: &str, resources_json: &[u8]) -> Result<(), RuntimeError> {
        self.run(
            self.command(&["update", "--resources", "-", id]),
            "update",
            Some(resources_json),
        )
        .map(|_| ())
    }

    pub(crate) fn ps(&self, id: &str) -> Result<Vec<u32>, RuntimeError> {
        let out = self.run(self.command(&["ps", "--format", "json", id]), "ps", None)?;
        Ok(serde_json::from_slice::<Option<Vec<u32>>>(&out)
            .ok()
            .flatten()
            .unwrap_or_default())
    }
}

/// Reads a pid file written by the runtime, and removes it.
pub(crate) fn take_pid_file(path: &Path) -> std::io::Result<i32> {
    let mut s = String::new();
    File::open(path)?.read_to_string(&mut s)?;
    let pid = s
        .trim()
        .parse()
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad pid file"))?;
    let _ = std::fs::remove_file(path);
    Ok(pid)
}
