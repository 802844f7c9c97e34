//! Exec and attach streams, over SPDY/3.1 and over WebSocket.
//!
//! SPDY: the client opens one stream per role, named by its `streamType` header
//! (`error`, `stdin`, `stdout`, `stderr`, and `resize` for a tty from v3 on); the server
//! replies to each and waits, up to the stream creation timeout, until every stream the
//! request needs is there. When the command ends its output streams are half-closed,
//! the outcome is written to the error stream (JSON `Status` from v4 on, plain text
//! before), and the connection is closed.
//!
//! WebSocket: fixed channels (0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize); an empty
//! message on the first output channel tells the client the streams are ready.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crius_spdy::session::{Incoming, Session, Stream, StreamWriter};
use crius_spdy::{Headers, RstStatus};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::status::{ResizeDecoder, error_stream_payload};
use crate::ws::{Layout, Mux};
use crate::{Backend, BoxRead, BoxWrite, Conn, Limits, Outcome, Request, StdStreams, TermSize};

/// How long a finished stream waits for the client to close the connection itself.
const LINGER: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Version {
    V1,
    V2,
    V3,
    V4,
    V5,
}

fn version(protocol: &str) -> Version {
    match protocol {
        "v5.channel.k8s.io" => Version::V5,
        "v4.channel.k8s.io" => Version::V4,
        "v3.channel.k8s.io" => Version::V3,
        "v2.channel.k8s.io" => Version::V2,
        _ => Version::V1,
    }
}

#[derive(Debug, Clone, Copy)]
struct Opts {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

fn opts(r: &Request) -> Opts {
    match r {
        Request::Exec(e) => Opts {
            stdin: e.stdin,
            stdout: e.stdout,
            stderr: e.stderr,
            tty: e.tty,
        },
        Request::Attach(a) => Opts {
            stdin: a.stdin,
            stdout: a.stdout,
            stderr: a.stderr,
            tty: a.tty,
        },
        Request::PortForward(_) => Opts {
            stdin: false,
            stdout: false,
            stderr: false,
            tty: false,
        },
    }
}

/// Runs the command on `io`: how it ended, or `None` when the client went meanwhile
/// (nothing more is written to it then).
async fn run<B: Backend>(backend: &B, parked: Request, io: StdStreams) -> Option<Outcome> {
    let gone = io.gone.clone();
    let outcome = match parked {
        Request::Exec(r) => backend.exec(r, io).await,
        Request::Attach(r) => backend.attach(r, io).await,
        Request::PortForward(_) => Outcome::Error("not a remote command".into()),
    };
    (!gone.is_cancelled()).then_some(outcome)
}

/// Feeds a resize stream's sizes into a channel until it ends.
fn resize_pump(mut r: impl AsyncRead + Send + Unpin + 'static) -> mpsc::Receiver<TermSize> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut dec = ResizeDecoder::default();
        let mut buf = [0u8; 1024];
        loop {
            let n = match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            match dec.feed(&buf[..n]) {
                Ok(sizes) => {
                    for s in sizes {
                        if tx.send(s).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    debug!("resize stream: {}", crate::chain(&e));
                    return;
                }
            }
        }
    });
    rx
}

const STREAM_TYPES: &[&str] = &["error", "stdin", "stdout", "stderr", "resize"];

/// The streams a request needs, by `streamType`.
fn wanted(o: Opts, v: Version) -> Vec<&'static str> {
    let mut want = vec!["error"];
    if o.stdin {
        want.push("stdin");
    }
    if o.stdout {
        want.push("stdout");
    }
    if o.stderr && !o.tty {
        want.push("stderr");
    }
    if o.tty && v >= Version::V3 {
        want.push("resize");
    }
    want
}

/// Answers the client's streams until every one in `want` is there; `None` when the
/// client went, or did not open them all within the stream creation timeout (the
/// session is then closed).
async fn accept_streams(
    session: &Session,
    incoming: &mut Incoming,
    want: &[&'static str],
    limits: Limits,
    gone: &CancellationToken,
) -> Option<HashMap<&'static str, Stream>> {
    let mut got = HashMap::new();
    let deadline = tokio::time::Instant::now() + limits.stream_creation;
    while want.iter().any(|w| !got.contains_key(*w)) {
        let inc = tokio::select! {
            s = incoming.accept() => s,
            () = tokio::time::sleep_until(deadline) => {
                warn!(?want, got = ?got.keys().collect::<Vec<_>>(), "streams not created in time");
                session.close();
                return None;
            }
            () = gone.cancelled() => return None,
        };
        let inc = inc?;
        let kind = inc.headers().get("streamtype").unwrap_or("").to_string();
        let Some(known) = STREAM_TYPES.iter().find(|t| **t == kind) else {
            debug!(%kind, "refusing a stream of unknown type");
            inc.reset(RstStatus::REFUSED_STREAM);
            continue;
        };
        let s = inc.reply(Headers::new()).ok()?;
        // A stream the request does not need is accepted and ignored (v1 clients
        // open stdin regardless).
        if want.contains(known) {
            got.insert(*known, s);
        }
    }
    Some(got)
}

pub(crate) async fn serve_spdy<T: Conn, B: Backend>(
    io: T,
    protocol: &str,
    parked: Request,
    backend: Arc<B>,
    limits: Limits,
    gone: CancellationToken,
) {
    let v = version(protocol);
    let (session, mut incoming) = crate::spdy_session(io, &gone);
    let want = wanted(opts(&parked), v);
    let Some(mut got) = accept_streams(&session, &mut incoming, &want, limits, &gone).await else {
        return;
    };
    // Streams opened later are answered and ignored.
    tokio::spawn(async move {
        while let Some(inc) = incoming.accept().await {
            let _ = inc.reply(Headers::new());
        }
    });

    let mut keep_writers: Vec<StreamWriter> = Vec::new();
    let mut half = |name: &str| got.remove(name).map(|s| s.split());
    let stdin: Option<BoxRead> = half("stdin").map(|(r, w)| {
        keep_writers.push(w);
        Box::new(r) as BoxRead
    });
    let stdout: Option<BoxWrite> = half("stdout").map(|(_, w)| Box::new(w) as BoxWrite);
    let stderr: Option<BoxWrite> = half("stderr").map(|(_, w)| Box::new(w) as BoxWrite);
    let resize = half("resize").map(|(r, w)| {
        keep_writers.push(w);
        resize_pump(r)
    });
    let Some((_, mut error)) = half("error") else {
        return;
    };
    let streams = StdStreams {
        stdin,
        stdout,
        stderr,
        resize,
        gone: gone.clone(),
    };
    let Some(outcome) = run(&*backend, parked, streams).await else {
        return;
    };
    if let Some(payload) = error_stream_payload(&outcome, v >= Version::V4) {
        let _ = error.write_all(&payload).await;
    }
    let _ = error.shutdown().await;
    for mut w in keep_writers {
        let _ = w.shutdown().await;
    }
    // The client closes once it has read everything (a GOAWAY would make spdystream
    // drop what it has not read yet); don't wait forever for it.
    let _ = tokio::time::timeout(LINGER, session.closed()).await;
    session.close();
}

pub(crate) async fn serve_ws<T: Conn, B: Backend>(
    io: T,
    protocol: &str,
    parked: Request,
    backend: Arc<B>,
    gone: CancellationToken,
) {
    const STDIN: u8 = 0;
    const STDOUT: u8 = 1;
    const STDERR: u8 = 2;
    const ERROR: u8 = 3;
    const RESIZE: u8 = 4;
    let v = version(protocol);
    let o = opts(&parked);
    let layout = Layout {
        inputs: if o.stdin { vec![STDIN] } else { vec![] },
        resize: o.tty.then_some(RESIZE),
        close_signal: v >= Version::V5,
    };
    let mut mux = Mux::start(io, layout, gone.clone()).await;
    // An empty message on the first output channel: the streams are ready.
    let first = if o.stdout {
        STDOUT
    } else if o.stderr {
        STDERR
    } else {
        ERROR
    };
    mux.send(first, Vec::new()).await;
    let streams = StdStreams {
        stdin: mux.input(STDIN).map(|r| Box::new(r) as BoxRead),
        stdout: o.stdout.then(|| Box::new(mux.output(STDOUT)) as BoxWrite),
        stderr: (o.stderr && !o.tty).then(|| Box::new(mux.output(STDERR)) as BoxWrite),
        resize: mux.resize(),
        gone: gone.clone(),
    };
    let Some(outcome) = run(&*backend, parked, streams).await else {
        return;
    };
    if let Some(payload) = error_stream_payload(&outcome, v >= Version::V4) {
        mux.send(ERROR, payload).await;
    }
    mux.close().await;
    gone.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order() {
        assert!(version("v5.channel.k8s.io") > version("v4.channel.k8s.io"));
        assert_eq!(version("channel.k8s.io"), Version::V1);
        assert_eq!(version("v3.channel.k8s.io"), Version::V3);
    }
}
