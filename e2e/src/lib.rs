//! The crius end-to-end harness: a real criusd on unique temporary roots, driven
//! over its socket by a tonic CRI client.
//!
//! - [`Daemon`] (module `daemon`): one criusd on its own roots, with the leak checks
//!   of [`Daemon::finish`];
//! - [`Fixture`]: a daemon plus what a test made through it (a registry, pushed and
//!   pulled images, pods, containers), torn down and leak-checked at the end;
//! - [`PodBuilder`] and [`ContainerBuilder`]: the CRI configs tests send, with test
//!   defaults;
//! - [`rpc`]: single CRI calls over a client; [`images`] and [`registry`]: test
//!   images and registries; [`stream`]: streaming clients; [`bench`](mod@bench): what the
//!   benchmarks share;
//! - [`Runtime`] and [`runtime_matrix!`](crius_testkit::runtime_matrix): one test
//!   under runc and under crun.
//!
//! The tests need root and the binaries built by `cargo build --workspace --bins`;
//! without either they fail loudly, never skip.
// Test harness code: a failed expectation is a failed test, so panics are the point.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

pub use crius_cri_api::v1;
pub use crius_testkit::Runtime;

pub mod bench;
mod daemon;
pub mod fixture;
pub mod images;
mod network;
pub mod registry;
mod request;
pub mod rpc;
pub mod soak;
pub mod stream;
pub mod tls;

pub use daemon::{Daemon, Options, force_clean, leaks, mounts_under, processes_mentioning};
pub use fixture::Fixture;
pub use network::TestNetwork;
pub use request::{ContainerBuilder, PodBuilder};
pub use rpc::*;

/// Default deadline for things that should happen promptly.
pub const DEADLINE: Duration = Duration::from_secs(30);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Fails the test unless it runs as root.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the crius e2e tests need root (they create namespaces, mounts and sockets)"
    );
}

/// The directory holding the workspace's built binaries (criusd, crius-shim).
pub fn bin_dir() -> PathBuf {
    // Test executables live in target/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary has a parent");
    let dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("deps has a parent").to_path_buf()
    } else {
        deps.to_path_buf()
    };
    let criusd = dir.join("criusd");
    assert!(
        criusd.is_file(),
        "{} is missing: build the binaries first (cargo build --workspace --bins)",
        criusd.display()
    );
    dir
}

/// Path of the criusd binary.
pub fn criusd_bin() -> PathBuf {
    bin_dir().join("criusd")
}

/// A unique scratch root for one test.
pub fn unique_root(tag: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let mut rnd = [0u8; 4];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut rnd));
    let root = PathBuf::from(format!(
        "/tmp/crius-e2e-{tag}-{}-{n}-{:02x}{:02x}{:02x}{:02x}",
        std::process::id(),
        rnd[0],
        rnd[1],
        rnd[2],
        rnd[3]
    ));
    std::fs::create_dir_all(&root).expect("creating the test root");
    root
}

/// Polls `check` until it returns `Some`, or fails after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts that a call was refused with `code` and a message naming `names` (a
/// field, an id, a value).
#[track_caller]
pub fn assert_refused(err: &tonic::Status, code: tonic::Code, names: &str) {
    assert_eq!(err.code(), code, "{err}");
    assert!(
        err.message().contains(names),
        "the message should name {names:?}: {err}"
    );
}

/// Connects a gRPC channel to a unix socket.
pub async fn connect(socket: &Path) -> Result<Channel> {
    let socket = socket.to_path_buf();
    Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .context("connecting to the CRI socket")
}

/// Runs a command and returns its stdout, failing on a non-zero exit.
pub fn run_cmd(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
