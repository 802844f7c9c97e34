//! [`ShimApi`] over `crius_shim::client`: each call connects to the container's
//! socket (a unix connect, microseconds) and makes one ttrpc request.

use std::path::{Path, PathBuf};

use crius_shim::client::{self, ExecSyncOutput, ProcessIo, ProcessState, Shim, StartOptions};

use super::{ExecSync, ShimAddr, ShimApi};
use crate::error::{CriError, CriResult};

/// The real shims.
pub struct RealShims {
    /// The crius-shim binary (for one-off `delete` runs when a shim is gone).
    pub binary: PathBuf,
}

fn connect(at: ShimAddr<'_>) -> CriResult<Shim> {
    client::connect(at.socket, at.id).map_err(CriError::shim("connecting to the shim"))
}

impl ShimApi for RealShims {
    fn launch(&self, opts: &StartOptions) -> CriResult<()> {
        let _span = tracing::info_span!("shim.start").entered();
        client::start(opts).map(drop).map_err(|e| {
            // A shim that started but could not be reached is stopped again.
            if let Ok(shim) = client::connect(&opts.socket, &opts.id) {
                let _ = shim.shutdown(true);
            }
            CriError::shim("starting the shim")(e)
        })
    }

    fn create(&self, at: ShimAddr<'_>, io: &ProcessIo) -> CriResult<u32> {
        // The shim's `runc create` (or crun's).
        let _span = tracing::info_span!("runtime.create").entered();
        connect(at)?
            .create(io)
            .map_err(CriError::shim("creating the container"))
    }

    fn start(&self, at: ShimAddr<'_>, exec_id: &str) -> CriResult<u32> {
        let _span = tracing::info_span!("runtime.start", exec_id).entered();
        connect(at)?
            .start(exec_id)
            .map_err(CriError::shim("starting the process"))
    }

    fn state(&self, at: ShimAddr<'_>, exec_id: &str) -> CriResult<ProcessState> {
        connect(at)?
            .state(exec_id)
            .map_err(CriError::shim("reading the process state"))
    }

    fn kill(&self, at: ShimAddr<'_>, exec_id: &str, signal: u32, all: bool) -> CriResult<()> {
        let _span = tracing::info_span!("runtime.kill", exec_id, signal, all).entered();
        connect(at)?
            .kill(exec_id, signal, all)
            .map_err(CriError::shim(format!("sending signal {signal}")))
    }

    fn delete(&self, at: ShimAddr<'_>, exec_id: &str) -> CriResult<()> {
        let _span = tracing::info_span!("runtime.delete", exec_id).entered();
        connect(at)?
            .delete(exec_id)
            .map(drop)
            .map_err(CriError::shim("deleting the process"))
    }

    fn shutdown(&self, at: ShimAddr<'_>) -> CriResult<()> {
        match client::connect(at.socket, at.id) {
            Ok(shim) => shim
                .shutdown(true)
                .map_err(CriError::shim("shutting the shim down")),
            Err(client::Error::ShimGone(_)) => Ok(()),
            Err(e) => Err(CriError::shim("connecting to the shim")(e)),
        }
    }

    fn exec_sync(&self, at: ShimAddr<'_>, run: ExecSync<'_>) -> CriResult<ExecSyncOutput> {
        connect(at)?
            .exec_sync(run.exec_id, run.process, run.timeout, run.output_limit)
            .map_err(CriError::shim("exec"))
    }

    fn reopen_log(&self, at: ShimAddr<'_>) -> CriResult<()> {
        connect(at)?
            .reopen_log()
            .map_err(CriError::shim("reopening the log"))
    }

    fn update(&self, at: ShimAddr<'_>, resources_json: &[u8]) -> CriResult<()> {
        connect(at)?
            .update(resources_json)
            .map_err(CriError::shim("updating resources"))
    }

    fn list_execs(&self, at: ShimAddr<'_>) -> CriResult<Vec<String>> {
        connect(at)?
            .list_execs()
            .map_err(CriError::shim("listing execs"))
    }

    fn is_alive(&self, socket: &Path) -> bool {
        client::is_alive(socket)
    }

    fn force_delete(&self, id: &str, bundle: &Path, runtime: &Path) -> CriResult<()> {
        let status = std::process::Command::new(&self.binary)
            .args(["-id", id, "-bundle"])
            .arg(bundle)
            .arg("-runtime")
            .arg(runtime)
            .arg("delete")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map_err(CriError::io(format!(
                "running {} delete",
                self.binary.display()
            )))?;
        // A bundle whose runtime state is already gone makes `delete` fail; that is
        // the state wanted, so only a failure to run it at all is an error.
        let _ = status;
        Ok(())
    }
}
