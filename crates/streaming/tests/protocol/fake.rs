//! The fake backend and a server around it.
//!
//! Exec commands the fake understands:
//! - `["exit", code, words...]`: prints `words` (if any) as a line on stdout, echoes
//!   stdin to stdout until EOF, prints `stderr of exit <code>` on stderr, and exits
//!   with `code`;
//! - `["fail", message]`: fails with `message` (an internal error);
//! - `["big", n]`: prints `n` bytes of `x`;
//! - `["wait"]`: runs until the client goes (`gone`), which it counts.
//!
//! Attach echoes stdin to stdout and prints `attached to <container>` on stderr.
//! Every call records which streams it was given, and the terminal sizes it gets.
//! `connect` dials 127.0.0.1 on the port asked for.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crius_cri_api::v1 as cri;
use crius_e2e::stream::{Finished, Want, spdy_command};
use crius_streaming::{
    Backend, BoxRead, BoxWrite, ConnectError, Outcome, Request, StdStreams, StreamServer,
    StreamingConfig, TermSize,
};
use tokio::io::{AsyncWriteExt, copy};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Deadline for anything that should happen promptly.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The pod id port-forward requests carry.
pub const POD: &str = "pod-1";

/// Polls `check` until it returns `Some`, failing the test after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs a remote command over SPDY `protocol` to its end, `input` on its stdin.
pub async fn spdy_run(url: &str, protocol: &str, want: Want, input: &[u8]) -> Finished {
    spdy_command(url, protocol, want)
        .await
        .unwrap()
        .run(input, DEADLINE)
        .await
        .unwrap()
}

/// What one exec or attach was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// `exec <cmd...>` or `attach <container>`.
    pub what: String,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub resize: bool,
}

/// The fake runtime side.
#[derive(Default)]
pub struct Fake {
    pub calls: Mutex<Vec<Call>>,
    pub sizes: Arc<Mutex<Vec<TermSize>>>,
    pub connects: Mutex<Vec<(String, u16)>>,
    /// Commands that saw their client go.
    pub gone: AtomicUsize,
}

impl Fake {
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    pub fn sizes(&self) -> Vec<TermSize> {
        self.sizes.lock().unwrap().clone()
    }

    pub fn gone(&self) -> usize {
        self.gone.load(Ordering::SeqCst)
    }

    /// Waits until `n` calls have begun.
    pub async fn calls_reach(&self, n: usize) {
        eventually(&format!("{n} calls"), || {
            let done = self.calls.lock().unwrap().len() >= n;
            async move { done.then_some(()) }
        })
        .await;
    }

    /// Waits until `n` commands have seen their client go.
    pub async fn gone_reaches(&self, n: usize) {
        eventually(&format!("{n} commands to see their client go"), || {
            let done = self.gone() >= n;
            async move { done.then_some(()) }
        })
        .await;
    }

    /// Records the call, starts recording its terminal sizes, and hands back the
    /// streams.
    fn begin(
        &self,
        what: String,
        io: StdStreams,
    ) -> (
        Option<BoxRead>,
        Option<BoxWrite>,
        Option<BoxWrite>,
        CancellationToken,
    ) {
        self.calls.lock().unwrap().push(Call {
            what,
            stdin: io.stdin.is_some(),
            stdout: io.stdout.is_some(),
            stderr: io.stderr.is_some(),
            resize: io.resize.is_some(),
        });
        if let Some(mut sizes) = io.resize {
            let seen = self.sizes.clone();
            tokio::spawn(async move {
                while let Some(s) = sizes.recv().await {
                    seen.lock().unwrap().push(s);
                }
            });
        }
        (io.stdin, io.stdout, io.stderr, io.gone)
    }
}

/// Echoes `stdin` to `stdout` (or nowhere) until EOF.
async fn echo(stdin: Option<BoxRead>, stdout: &mut Option<BoxWrite>) {
    if let Some(mut input) = stdin {
        match stdout {
            Some(out) => {
                let _ = copy(&mut input, out).await;
            }
            None => {
                let _ = copy(&mut input, &mut tokio::io::sink()).await;
            }
        }
    }
}

async fn say(to: &mut Option<BoxWrite>, what: &[u8]) {
    if let Some(w) = to {
        w.write_all(what).await.unwrap();
    }
}

async fn close(to: Option<BoxWrite>) {
    if let Some(mut w) = to {
        let _ = w.shutdown().await;
    }
}

impl Backend for Fake {
    async fn exec(&self, req: cri::ExecRequest, io: StdStreams) -> Outcome {
        let (stdin, mut stdout, mut stderr, gone) =
            self.begin(format!("exec {}", req.cmd.join(" ")), io);
        let args: Vec<&str> = req.cmd.iter().map(String::as_str).collect();
        let outcome = match args.as_slice() {
            ["wait"] => {
                gone.cancelled().await;
                self.gone.fetch_add(1, Ordering::SeqCst);
                Outcome::Error("the client went".into())
            }
            ["fail", msg] => Outcome::Error(msg.to_string()),
            ["big", n] => {
                let n: usize = n.parse().unwrap();
                say(&mut stdout, &vec![b'x'; n]).await;
                Outcome::Success
            }
            ["exit", code, words @ ..] => {
                if !words.is_empty() {
                    say(&mut stdout, format!("{}\n", words.join(" ")).as_bytes()).await;
                }
                echo(stdin, &mut stdout).await;
                say(&mut stderr, format!("stderr of exit {code}\n").as_bytes()).await;
                match code.parse().unwrap() {
                    0 => Outcome::Success,
                    n => Outcome::ExitCode(n),
                }
            }
            _ => Outcome::Error(format!("the fake has no command {args:?}")),
        };
        close(stdout).await;
        close(stderr).await;
        outcome
    }

    async fn attach(&self, req: cri::AttachRequest, io: StdStreams) -> Outcome {
        let (stdin, mut stdout, mut stderr, _) =
            self.begin(format!("attach {}", req.container_id), io);
        echo(stdin, &mut stdout).await;
        say(
            &mut stderr,
            format!("attached to {}\n", req.container_id).as_bytes(),
        )
        .await;
        close(stdout).await;
        close(stderr).await;
        Outcome::Success
    }

    async fn connect(&self, pod_id: &str, port: u16) -> Result<TcpStream, ConnectError> {
        self.connects
            .lock()
            .unwrap()
            .push((pod_id.to_string(), port));
        Ok(TcpStream::connect(("127.0.0.1", port)).await?)
    }
}

/// The test config: loopback and a free port; tests shorten timeouts on it.
pub fn config() -> StreamingConfig {
    StreamingConfig {
        address: "127.0.0.1".into(),
        ..Default::default()
    }
}

/// A streaming server serving [`Fake`]; stopped when dropped.
pub struct Harness {
    pub server: Arc<StreamServer>,
    pub fake: Arc<Fake>,
    pub stop: CancellationToken,
}

impl Harness {
    pub async fn start(cfg: StreamingConfig) -> Harness {
        let (server, listener, tls) = StreamServer::bind(&cfg).await.unwrap();
        let fake = Arc::new(Fake::default());
        let stop = CancellationToken::new();
        server
            .clone()
            .serve(listener, tls, fake.clone(), stop.clone());
        Harness { server, fake, stop }
    }

    /// The URL of an exec of `cmd` with the streams in `want`.
    pub fn exec(&self, cmd: &[&str], want: Want) -> String {
        self.server
            .url(Request::Exec(cri::ExecRequest {
                container_id: "c1".into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                tty: want.tty,
                stdin: want.stdin,
                stdout: want.stdout,
                stderr: want.stderr,
            }))
            .unwrap()
    }

    /// The URL of an attach to container `c1`.
    pub fn attach(&self, want: Want) -> String {
        self.server
            .url(Request::Attach(cri::AttachRequest {
                container_id: "c1".into(),
                tty: want.tty,
                stdin: want.stdin,
                stdout: want.stdout,
                stderr: want.stderr,
            }))
            .unwrap()
    }

    /// The URL of a port forward into [`POD`].
    pub fn port_forward(&self, ports: &[i32]) -> String {
        self.server
            .url(Request::PortForward(cri::PortForwardRequest {
                pod_sandbox_id: POD.into(),
                port: ports.to_vec(),
            }))
            .unwrap()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Every stream, no tty.
pub const ALL: Want = Want {
    stdin: true,
    stdout: true,
    stderr: true,
    tty: false,
};

/// A TCP echo server on 127.0.0.1: every connection gets back what it sends, and is
/// closed once the peer finished sending. Returns the port.
pub async fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.into_split();
                let _ = copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    port
}

/// A port on 127.0.0.1 that nothing listens on (bound, then let go).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
