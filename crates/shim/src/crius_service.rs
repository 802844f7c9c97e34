//! crius's own service, `crius.shim.v1.Crius` (proto/crius/shim/v1/shim.proto):
//! ReopenLog, ExecSync (the capture is in `execsync`), ListExecs and Attach.

use std::fs::File;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::Arc;

use ttrpc::TtrpcContext;

use crate::attach::AttachError;
use crate::procs::check_exec_id;
use crate::proto::shim::{
    AttachRequest, AttachResponse, ExecSyncRequest, ExecSyncResponse, ListExecsRequest,
    ListExecsResponse, ReopenLogRequest, ReopenLogResponse,
};
use crate::service::{Shim, ShimError, locked};
use crate::{execsync, procs, sys};

/// The Crius service.
pub(crate) struct CriusService(pub(crate) Arc<Shim>);

impl crate::proto::shim_ttrpc::Crius for CriusService {
    fn reopen_log(
        &self,
        _: &TtrpcContext,
        req: ReopenLogRequest,
    ) -> ttrpc::Result<ReopenLogResponse> {
        let shim = self.0.serving(&req.id)?;
        let log = locked(&shim.log).clone().ok_or(ShimError::NoLog)?;
        log.reopen().map_err(ShimError::ReopenLog)?;
        Ok(ReopenLogResponse::new())
    }

    fn exec_sync(&self, _: &TtrpcContext, req: ExecSyncRequest) -> ttrpc::Result<ExecSyncResponse> {
        let shim = self.0.serving(&req.id)?;
        check_exec_id(&req.exec_id)?;
        shim.procs.reserve_exec_sync(&req.exec_id)?;
        let res = execsync::run(shim, &req);
        shim.procs.remove(&req.exec_id);
        Ok(res?)
    }

    fn list_execs(
        &self,
        _: &TtrpcContext,
        req: ListExecsRequest,
    ) -> ttrpc::Result<ListExecsResponse> {
        let shim = self.0.serving(&req.id)?;
        Ok(ListExecsResponse {
            exec_ids: shim.procs.exec_ids(),
            ..Default::default()
        })
    }

    /// See shim.proto. Attaches to the init's streams only, in crius mode; for a
    /// terminal the pty's output is `stdout` and `stderr` is ignored.
    fn attach(&self, _: &TtrpcContext, req: AttachRequest) -> ttrpc::Result<AttachResponse> {
        let shim = self.0.serving(&req.id)?;
        attach(shim, &req)?;
        Ok(AttachResponse::new())
    }
}

fn attach(shim: &Shim, req: &AttachRequest) -> Result<(), ShimError> {
    if shim.cfg.log_path.is_none() {
        return Err(ShimError::AttachNeedsCriusMode);
    }
    let terminal = shim.procs.attachable_init()?;
    let (out_tee, err_tee) = locked(&shim.tees)
        .clone()
        .ok_or(procs::ProcError::NotRunning)?;
    // Open every FIFO before attaching any, so a bad path attaches nothing.
    let out = open_attach_fifo(&req.stdout, "stdout")?;
    let errf = if terminal {
        None
    } else {
        open_attach_fifo(&req.stderr, "stderr")?
    };
    let mut attached = false;
    let mut ended = false;
    for (f, tee) in [(out, out_tee), (errf, err_tee)] {
        let Some(f) = f else { continue };
        // A stream that has just ended gets its FIFO closed at once (EOF).
        match tee.attach(f) {
            Ok(()) => attached = true,
            Err(AttachError::Ended) => ended = true,
            Err(AttachError::Io(e)) => return Err(ShimError::Attach(e)),
        }
    }
    if ended && !attached {
        return Err(procs::ProcError::NotRunning.into());
    }
    Ok(())
}

/// Opens an attach FIFO for writing without waiting: the caller must hold its read end.
/// An empty path: that stream is not wanted.
fn open_attach_fifo(path: &str, what: &'static str) -> Result<Option<File>, ShimError> {
    if path.is_empty() {
        return Ok(None);
    }
    let f = sys::open_fifo(Path::new(path), libc::O_WRONLY | libc::O_NONBLOCK).map_err(|e| {
        if e.raw_os_error() == Some(libc::ENXIO) {
            ShimError::FifoNoReader {
                what,
                path: path.to_string(),
            }
        } else {
            ShimError::OpenFifo {
                what,
                path: path.to_string(),
                source: e,
            }
        }
    })?;
    let is_fifo = f
        .metadata()
        .map(|m| m.file_type().is_fifo())
        .unwrap_or(false);
    if !is_fifo {
        return Err(ShimError::NotFifo {
            what,
            path: path.to_string(),
        });
    }
    Ok(Some(f))
}
