//! criusd, the crius CRI v1 server, as a library: [`cli`] is its command line.
//!
//! Layout (see docs/architecture.md for the whole picture):
//! - [`daemon`]: wiring and start-up order; [`config`]: the TOML configuration;
//! - [`services`]: the gRPC services, one file per RPC group, all calls through one
//!   wrapper (span, error mapping, latency hook); [`validate`]: request checks;
//! - [`sandbox`] and [`container`]: the managers, one file per operation;
//! - [`host`]: host effects behind traits (shim, rootfs, namespaces), with a recording
//!   fake for unprivileged undo tests; [`pinns`]: the namespace helper process;
//! - [`cdi`]: CDI devices (`[cdi]`, the requests, the spec directories' devices);
//! - [`events`]: container events (GetContainerEvents), one bus all subscribers share;
//! - [`error`]: the error vocabulary and its one mapping to gRPC codes;
//! - [`notify`]: readiness, shutdown and watchdog notifications to systemd.
#![deny(unsafe_code)]

pub mod cdi;
pub mod check;
pub mod cli;
pub mod config;
mod container;
mod creations;
pub mod daemon;
pub mod error;
mod events;
mod failpoint;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod heap;
mod host;
pub mod metrics;
pub mod notify;
pub mod nri;
pub mod otel;
pub mod pinns;
mod podfiles;
mod sandbox;
mod services;
mod streaming;
mod sys;
mod util;
mod validate;
