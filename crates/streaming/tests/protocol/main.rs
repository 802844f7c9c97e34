//! The streaming protocols end to end without root: a real
//! [`StreamServer`](crius_streaming::StreamServer) on 127.0.0.1, a fake
//! [`Backend`](crius_streaming::Backend) ([`fake::Fake`]), and the SPDY/3.1 and
//! WebSocket clients of `crius_e2e::stream`, over real TCP connections.
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fake;
mod portforward;
mod remotecommand;
mod server;
