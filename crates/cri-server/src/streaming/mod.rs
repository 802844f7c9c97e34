//! Exec, Attach and PortForward streams: served by `crius_streaming`'s server, with
//! [`backend::RuntimeBackend`] as its runtime side.

pub mod backend;

pub use crius_streaming::{Request, StreamServer};
