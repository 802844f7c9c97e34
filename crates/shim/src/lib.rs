//! crius-shim: one process per container, driving runc or crun, holding the
//! container's stdio, writing its CRI log and recording its exit.
//!
//! Protocol: containerd's shim v2 Task service (ttrpc, `containerd-shim-protos`
//! types) plus `crius.shim.v1.Crius` (proto/crius/shim/v1/shim.proto: ReopenLog,
//! ExecSync, Attach). The same binary follows containerd's shim v2 launch protocol
//! (`start` / `delete`), so Debian's containerd can run containers through it.
//!
//! Why the sync ttrpc server and rust-protobuf: `containerd-shim-protos` gives the
//! exact containerd messages and service names for free, and its synchronous flavour
//! needs no async runtime; the shim's work is a few blocking runc calls and a few
//! copier threads, so threads cost less memory than an executor would.
//!
//! On-disk layout (all in the bundle unless flags say otherwise): `exit.json` (the
//! durable exit record), `runtime-log.json` (runc's/crun's `--log`), `.crius-runtime/`
//! (the runtime's `--root` by default) and short-lived `*.pid`, `exec-*.json`,
//! `console*.sock` scratch files. The caller owns the bundle and removes it.
//!
//! Inside: `cli` (the command line), `task` (the Task service) and `crius_service` (the
//! Crius service, with ExecSync's capture in `execsync`) over `service` (what both share,
//! and the errors they answer with); `procs` (the process table: launching, exit
//! watching, waits; its invariants), `runtime` (runc/crun), `reaper` (the only
//! `waitpid`), `stdio` and `attach` (the copiers and attachers), `crilog`, `exitfile`,
//! `oom`, `stats`, `publisher` (containerd's events) and `sys` (the `unsafe` libc calls).

#![warn(missing_docs)]

mod attach;
mod cli;
pub mod client;
pub mod crilog;
mod crius_service;
mod execsync;
mod exitfile;
mod oom;
mod procs;
mod publisher;
mod reaper;
mod runtime;
mod service;
mod stats;
mod stdio;
mod sys;
mod task;

pub use exitfile::ExitRecord;

/// Generated ttrpc bindings for `crius.shim.v1`.
#[allow(
    warnings,
    missing_docs,
    clippy::all,
    clippy::unwrap_used,
    clippy::expect_used,
    unused_qualifications,
    unreachable_pub
)]
mod proto {
    pub mod shim {
        include!(concat!(env!("OUT_DIR"), "/crius/shim.rs"));
    }
    pub mod shim_ttrpc {
        include!(concat!(env!("OUT_DIR"), "/crius/shim_ttrpc.rs"));
    }
}

/// Entry point of the `crius-shim` binary (see the `cli` docs for its arguments).
pub fn shim_main() -> std::process::ExitCode {
    cli::main()
}
