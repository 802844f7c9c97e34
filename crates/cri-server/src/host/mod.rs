//! Host effects behind small traits: the container's shim, its root file system, its
//! processes when the shim is gone, and the pod's pinned namespaces (the pod network is `crius_cni::NetworkBackend`).
//!
//! The managers make every change to the host through these traits, so that their
//! undo paths and start-up recovery are unit-tested without root: the recording
//! fake in `fake` logs each call and can be told to fail the N-th one. Each real
//! implementation is a thin layer over the component that does the work
//! (`crius_shim::client`, `crius_snapshotter`, the `criusd pinns` helper).
//!
//! A "do" method that fails leaves nothing of itself behind (as
//! `NetworkBackend::setup` promises), so a caller undoes only the steps that
//! succeeded. Every undo-side method (`shutdown`, `kill`, `delete`, `unmount`, `remove_layer`,
//! `unpin`, `stop_infra`, `force_delete`) is idempotent: it succeeds on something that
//! is already gone, so a release can run on a half-made object and run again after a
//! crash.

use std::path::Path;
use std::time::Duration;

use crius_shim::client::{ExecSyncOutput, ProcessIo, ProcessState, StartOptions};
use futures_util::future::BoxFuture;

use crate::error::CriResult;
use crate::pinns::PinRequest;

pub mod cgroup;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fake;
pub mod ns;
pub mod rootfs;
pub mod shim;

/// Where a container's shim answers.
#[derive(Debug, Clone, Copy)]
pub struct ShimAddr<'a> {
    pub socket: &'a Path,
    pub id: &'a str,
}

/// One ExecSync: a process run to completion in a container.
#[derive(Debug, Clone, Copy)]
pub struct ExecSync<'a> {
    pub exec_id: &'a str,
    /// The OCI process, JSON.
    pub process: &'a [u8],
    /// Killed after this long.
    pub timeout: Duration,
    /// Output kept per stream; the rest is dropped.
    pub output_limit: u64,
}

/// A container's shim (one process per container, reached over its socket).
/// Blocking: call from the blocking pool.
pub trait ShimApi: Send + Sync {
    /// Starts the container's shim process; returns once it serves on its socket.
    fn launch(&self, opts: &StartOptions) -> CriResult<()>;
    /// Has the shim create the container (`runc create`); returns the init's pid.
    fn create(&self, at: ShimAddr<'_>, io: &ProcessIo) -> CriResult<u32>;
    /// Starts a created process (`""`: the container's init); returns its pid.
    fn start(&self, at: ShimAddr<'_>, exec_id: &str) -> CriResult<u32>;
    /// A process's state.
    fn state(&self, at: ShimAddr<'_>, exec_id: &str) -> CriResult<ProcessState>;
    /// Signals a process (`all`: every process of the container).
    fn kill(&self, at: ShimAddr<'_>, exec_id: &str, signal: u32, all: bool) -> CriResult<()>;
    /// Deletes a stopped process (for the init: the runtime's state of the container).
    fn delete(&self, at: ShimAddr<'_>, exec_id: &str) -> CriResult<()>;
    /// Stops the shim process itself.
    fn shutdown(&self, at: ShimAddr<'_>) -> CriResult<()>;
    /// Runs a process to completion and returns its output (ExecSync).
    fn exec_sync(&self, at: ShimAddr<'_>, run: ExecSync<'_>) -> CriResult<ExecSyncOutput>;
    /// Reopens the container's CRI log at its path.
    fn reopen_log(&self, at: ShimAddr<'_>) -> CriResult<()>;
    /// Applies new resources (`runc update`).
    fn update(&self, at: ShimAddr<'_>, resources_json: &[u8]) -> CriResult<()>;
    /// The exec ids the shim holds.
    fn list_execs(&self, at: ShimAddr<'_>) -> CriResult<Vec<String>>;
    /// Whether the shim still answers on `socket`.
    fn is_alive(&self, socket: &Path) -> bool;
    /// When the shim is gone: force-deletes the runtime's state of the container
    /// (killing what is left of it) with a one-off shim.
    fn force_delete(&self, id: &str, bundle: &Path, runtime: &Path) -> CriResult<()>;
}

/// A container's root file system: its writable layer over the image's layers,
/// mounted at the bundle's `rootfs`; its image volumes (read-only views of an image's
/// layers) and the recursive read-only clones crius makes for a runtime that cannot.
/// Blocking.
/// How a pod with its own user namespace sees a layer: each lower layer through an
/// idmapped clone (an id 0 on disk is the pod's root), and the writable layer's
/// top directories handed to the host ids of the pod's root, so that what the
/// container writes is owned, on disk, by the host ids it runs as. The image's
/// files are never copied or chowned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idmap {
    /// The pod's pinned user namespace.
    pub userns: std::path::PathBuf,
    /// The host uid and gid of the pod's root.
    pub owner: (u32, u32),
}

pub trait Rootfs: Send + Sync {
    /// Makes the writable layer `key` over the layer `parent` (a chain id; `None`:
    /// an empty image).
    fn create_layer(&self, key: &str, parent: Option<&str>) -> CriResult<()>;
    /// Mounts layer `key` (over its parents) at `target`; with `idmap`, seen through
    /// the maps of a pod's user namespace (see [`Idmap`]).
    fn mount(&self, key: &str, target: &Path, idmap: Option<&Idmap>) -> CriResult<()>;
    /// Unmounts `target`; nothing mounted is fine.
    fn unmount(&self, target: &Path) -> CriResult<()>;
    /// Removes the writable layer or view `key`; a missing one is fine.
    fn remove_layer(&self, key: &str) -> CriResult<()>;
    /// Makes the read-only view `key` of the committed chain `chain` (an image
    /// volume; [`Rootfs::mount`] mounts it). One that exists already is fine.
    fn create_view(&self, key: &str, chain: &str) -> CriResult<()>;
    /// Mounts at `target` a read-only clone of `source` and every mount under it.
    fn bind_read_only_recursive(&self, source: &Path, target: &Path) -> CriResult<()>;
    /// Mounts at `target` an idmapped clone of `source` and every mount under it,
    /// through the maps of the user namespace pinned at `userns`; read-only when
    /// `read_only`.
    fn bind_idmapped(
        &self,
        source: &Path,
        target: &Path,
        userns: &Path,
        read_only: bool,
    ) -> CriResult<()>;
    /// Detaches the mount tree at `target` (lazily, submounts included); nothing
    /// mounted, or no `target`, is fine.
    fn detach(&self, target: &Path) -> CriResult<()>;
    /// Bytes and inodes the writable layer holds.
    fn usage(&self, key: &str) -> Option<crius_snapshotter::Usage>;
}

/// A container's processes through its cgroup, for when its shim is gone. Blocking.
pub trait Processes: Send + Sync {
    /// The pids in the cgroup of the container whose bundle is `bundle`; empty when
    /// the cgroup (or the bundle) is gone.
    fn pids(&self, bundle: &Path) -> CriResult<Vec<u32>>;
    /// Sends `signal` to `pid`; a process already gone is fine.
    fn signal(&self, pid: u32, signal: u32) -> CriResult<()>;
}

/// A pod's pinned namespaces and its infra process (the holder of a shared PID
/// namespace).
pub trait Namespaces: Send + Sync {
    /// Creates the namespaces `req` asks for and pins them under `req.dir`.
    fn pin<'a>(&'a self, req: &'a PinRequest) -> BoxFuture<'a, CriResult<()>>;
    /// Releases every namespace pinned under `dir` and removes `dir`.
    fn unpin(&self, dir: &Path) -> CriResult<()>;
    /// Starts the pod's infra process (state in `dir`), its PID namespace made in
    /// `userns` when the pod has its own user namespace; returns its pid.
    /// Whether pods may have their own user namespace (the kernel makes them and
    /// idmapped mounts of the layers' file system).
    fn user_namespaces(&self) -> bool;
    fn start_infra<'a>(
        &'a self,
        dir: &'a Path,
        userns: Option<&'a Path>,
    ) -> BoxFuture<'a, CriResult<u32>>;
    /// Kills the infra process and waits for it to go.
    fn stop_infra<'a>(&'a self, pid: u32, dir: &'a Path) -> BoxFuture<'a, ()>;
    /// Whether `path` is a live pinned namespace.
    fn is_pinned(&self, path: &Path) -> bool;
    /// Whether `pid` is still the infra process started from `dir`.
    fn infra_alive(&self, pid: u32, dir: &Path) -> bool;
}
