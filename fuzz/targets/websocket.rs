//! WebSocket streams (crates/streaming): exec/attach (`channel.k8s.io` to
//! `v5.channel.k8s.io`) and port forward, served on an upgraded connection as the
//! server serves them, fed whatever a client sends: channel bytes, `[255, ch]`
//! close signals, resize messages, port-forward traffic, broken frames.
//!
//! Invariants: nothing panics; the command's stdin is exactly the channel-0
//! payloads the client's frames carry (read by tungstenite itself, synchronously,
//! as the reference) up to the close signal; terminal sizes arrive in order; what
//! the server writes is well-formed, unmasked, on the request's output channels
//! only, and port forwarding starts every channel with its port number and echoes a
//! prefix of what was sent; when the input itself ends the command (stdin closed,
//! a Close frame, a broken frame) the server finishes without the client hanging
//! up, and otherwise it finishes once the client does.
//!
//! Input: a flags byte (bits 0-2: stdin, stdout, stderr; bit 3: tty; bits 4-5:
//! protocol v5, v4, v2, v1; bit 6: attach; bit 7: port forward), for port forward
//! the query string and a newline, then the client's bytes.

use std::io::{Cursor, Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crius_cri_api::v1 as cri;
use crius_fuzz::{Harness, Target};
use crius_streaming::{Backend, ConnectError, Outcome, Request, StdStreams, TermSize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket, WebSocketConfig};
use tokio_util::sync::CancellationToken;

use super::{IO_BOUND, runtime, tag};

pub const TARGET: Target = Target {
    name: "websocket",
    make: || Box::new(Sockets::new()),
    dictionary: &[
        b"\x82",
        b"\x02",
        b"\x80",
        b"\x81",
        b"\x88",
        b"\x89",
        b"\x8a",
        b"\x82\x80\x00\x00\x00\x00",
        b"\x82\x81\x00\x00\x00\x00\x00",
        b"\x82\x82\x00\x00\x00\x00\xff\x00",
        b"\x7e\x01\x00",
        b"\x7f\x00\x00\x00\x00\x00\x01\x00\x00",
        b"{\"Width\":80,\"Height\":24}",
        b"ports=",
        b"8080",
        b"\n",
    ],
    max_len: 16384,
    time_bound: IO_BOUND,
    ci_iterations: 400,
};

/// How long the server may take to finish once it has what it needs to.
const END: Duration = Duration::from_secs(5);
const PROTOCOLS: [&str; 4] = [
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// What the backend saw.
#[derive(Debug, Default)]
struct Seen {
    stdin: Vec<u8>,
    sizes: Vec<TermSize>,
    connects: Vec<u16>,
}

struct FuzzBackend {
    seen: Arc<Mutex<Seen>>,
    echo: SocketAddr,
}

fn lock(m: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FuzzBackend {
    /// Reads stdin to its end while taking terminal sizes, writes to stdout and
    /// stderr, and ends with an outcome that depends on what it read.
    async fn command(&self, io: StdStreams) -> Outcome {
        let StdStreams {
            stdin,
            mut stdout,
            mut stderr,
            resize,
            gone: _,
        } = io;
        let seen = self.seen.clone();
        let sizes = tokio::spawn(async move {
            if let Some(mut rx) = resize {
                while let Some(s) = rx.recv().await {
                    lock(&seen).sizes.push(s);
                }
            }
        });
        let mut input = Vec::new();
        if let Some(mut r) = stdin {
            let _ = r.read_to_end(&mut input).await;
        }
        for (w, text) in [(&mut stdout, &b"out"[..]), (&mut stderr, &b"err"[..])] {
            if let Some(w) = w {
                let _ = w.write_all(text).await;
                let _ = w.write_all(&input[..input.len().min(64)]).await;
                let _ = w.shutdown().await;
            }
        }
        sizes.abort();
        let outcome = match input.len() % 3 {
            0 => Outcome::Success,
            1 => Outcome::ExitCode(3),
            _ => Outcome::Error("the fuzz backend refuses".into()),
        };
        lock(&self.seen).stdin = input;
        outcome
    }
}

impl Backend for FuzzBackend {
    async fn exec(&self, _req: cri::ExecRequest, io: StdStreams) -> Outcome {
        self.command(io).await
    }

    async fn attach(&self, _req: cri::AttachRequest, io: StdStreams) -> Outcome {
        self.command(io).await
    }

    async fn connect(&self, _pod_id: &str, port: u16) -> Result<TcpStream, ConnectError> {
        lock(&self.seen).connects.push(port);
        if port % 2 == 1 {
            return Err("connection refused by the fuzz backend".into());
        }
        Ok(TcpStream::connect(self.echo).await?)
    }
}

/// A socket over an in-memory input; writes go nowhere.
struct Replay(Cursor<Vec<u8>>);

impl Read for Replay {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        Read::read(&mut self.0, buf)
    }
}

impl Write for Replay {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn ws_config() -> WebSocketConfig {
    let mut c = WebSocketConfig::default();
    c.max_message_size = Some(16 << 20);
    c.max_frame_size = Some(16 << 20);
    c
}

/// The messages in `bytes` read as `role`, and whether reading ended at the end of
/// the bytes (rather than at a Close frame or a protocol error).
fn read_messages(bytes: &[u8], role: Role) -> (Vec<Message>, Option<WsError>) {
    let mut ws =
        WebSocket::from_raw_socket(Replay(Cursor::new(bytes.to_vec())), role, Some(ws_config()));
    let mut out = Vec::new();
    loop {
        match ws.read() {
            Ok(m) => out.push(m),
            Err(e) => return (out, Some(e)),
        }
    }
}

/// Whether a read error is just the bytes running out.
fn ran_out(e: &Option<WsError>) -> bool {
    matches!(
        e,
        None | Some(WsError::Protocol(
            ProtocolError::ResetWithoutClosingHandshake
        )) | Some(WsError::ConnectionClosed)
            | Some(WsError::AlreadyClosed)
    ) || matches!(e, Some(WsError::Io(io)) if io.kind() == std::io::ErrorKind::UnexpectedEof)
}

/// What the client's bytes say, read as the server reads them.
struct Expected {
    /// Channel payloads in order, up to the end of reading.
    channels: Vec<(u8, Vec<u8>)>,
    /// Channels closed by `[255, ch]` (when the protocol has them).
    closed: Vec<u8>,
    /// Reading ends by itself: a Close frame or a broken frame.
    self_ending: bool,
}

fn expected(client: &[u8], close_signal: bool) -> Expected {
    let (messages, err) = read_messages(client, Role::Server);
    let mut channels = Vec::new();
    let mut closed = Vec::new();
    let mut self_ending = !ran_out(&err);
    for m in messages {
        match m {
            Message::Binary(d) => {
                let Some((&ch, payload)) = d.split_first() else {
                    continue;
                };
                if close_signal && ch == 255 {
                    if let Some(&target) = payload.first() {
                        closed.push(target);
                    }
                    continue;
                }
                if !closed.contains(&ch) {
                    channels.push((ch, payload.to_vec()));
                }
            }
            Message::Close(_) => {
                self_ending = true;
                break;
            }
            _ => {}
        }
    }
    Expected {
        channels,
        closed,
        self_ending,
    }
}

fn payload(e: &Expected, ch: u8) -> Vec<u8> {
    e.channels
        .iter()
        .filter(|(c, _)| *c == ch)
        .flat_map(|(_, p)| p.iter().copied())
        .collect()
}

/// The server's messages: well-formed, binary (or a Close), each on an allowed
/// channel; channel payloads in order.
fn server_output(out: &[u8], allowed: &dyn Fn(u8) -> bool) -> Vec<(u8, Vec<u8>)> {
    let (messages, err) = read_messages(out, Role::Client);
    assert!(ran_out(&err), "the server wrote a broken stream: {err:?}");
    let mut got = Vec::new();
    for m in messages {
        match m {
            Message::Binary(d) => {
                let Some((&ch, p)) = d.split_first() else {
                    panic!("the server sent a message without a channel");
                };
                assert!(allowed(ch), "the server wrote on channel {ch}");
                got.push((ch, p.to_vec()));
            }
            Message::Close(_) | Message::Pong(_) => {}
            other => panic!("the server sent {other:?}"),
        }
    }
    got
}

struct Sockets {
    rt: tokio::runtime::Runtime,
    echo: SocketAddr,
}

impl Sockets {
    fn new() -> Sockets {
        let rt = runtime();
        let listener = match rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")) {
            Ok(l) => l,
            Err(e) => panic!("binding the echo listener: {e}"),
        };
        let echo = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("echo listener address: {e}"),
        };
        rt.spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        Sockets { rt, echo }
    }
}

/// Runs one connection: the server on one end of a pipe, the client's bytes into
/// the other; the client hangs up at once unless `hold`, in which case the server
/// must finish by itself first. Returns what the server wrote.
async fn connection<F>(client: &[u8], hold: bool, serve: F) -> Vec<u8>
where
    F: FnOnce(tokio::io::DuplexStream, CancellationToken) -> tokio::task::JoinHandle<()>,
{
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    let gone = CancellationToken::new();
    let server = serve(theirs, gone.clone());
    let (mut rd, mut wr) = tokio::io::split(ours);
    let reader = tokio::spawn(async move {
        let mut out = Vec::new();
        let _ = rd.read_to_end(&mut out).await;
        out
    });
    let _ = wr.write_all(client).await;
    if hold {
        match tokio::time::timeout(END, server).await {
            Ok(r) => assert!(r.is_ok(), "the server task failed: {r:?}"),
            Err(_) => panic!("the input ends the stream, yet the server did not finish"),
        }
        drop(wr);
    } else {
        let _ = wr.shutdown().await;
        drop(wr);
        match tokio::time::timeout(END, server).await {
            Ok(r) => assert!(r.is_ok(), "the server task failed: {r:?}"),
            Err(_) => panic!("the client hung up, yet the server did not finish"),
        }
    }
    match tokio::time::timeout(END, reader).await {
        Ok(Ok(out)) => out,
        _ => panic!("the server finished but did not close the connection"),
    }
}

impl Sockets {
    async fn exec(&self, flags: u8, client: &[u8]) -> u64 {
        let (stdin, stdout, stderr, tty) = (
            flags & 1 != 0,
            flags & 2 != 0,
            flags & 4 != 0,
            flags & 8 != 0,
        );
        let protocol = PROTOCOLS[usize::from((flags >> 4) & 3)];
        let v5 = protocol.starts_with("v5");
        let request = if flags & 64 != 0 {
            Request::Attach(cri::AttachRequest {
                container_id: "c".into(),
                stdin,
                tty,
                stdout,
                stderr,
            })
        } else {
            Request::Exec(cri::ExecRequest {
                container_id: "c".into(),
                cmd: vec!["sh".into()],
                tty,
                stdin,
                stdout,
                stderr,
            })
        };
        let want = expected(client, v5);
        let stdin_ends = !stdin || want.closed.contains(&0);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let backend = Arc::new(FuzzBackend {
            seen: seen.clone(),
            echo: self.echo,
        });
        let out = connection(client, stdin_ends || want.self_ending, |io, gone| {
            tokio::spawn(async move {
                crius_streaming::fuzzing::websocket_exec(io, protocol, request, backend, gone).await
            })
        })
        .await;
        let seen = lock(&seen);
        let expected_stdin = if stdin { payload(&want, 0) } else { Vec::new() };
        assert_eq!(
            seen.stdin, expected_stdin,
            "the command's stdin is not what the client sent on channel 0"
        );
        let resize = payload(&want, 4);
        if tty && resize.len() <= 4096 {
            let all: Vec<TermSize> = serde_json::Deserializer::from_slice(&resize)
                .into_iter::<TermSize>()
                .map_while(Result::ok)
                .collect();
            assert!(
                all.starts_with(&seen.sizes),
                "terminal sizes {:?} are not a prefix of those sent, {all:?}",
                seen.sizes
            );
        }
        let got = server_output(&out, &|ch| (1..=3).contains(&ch));
        tag(&[
            "exec",
            &(flags & 0x7f).to_string(),
            &got.len().min(3).to_string(),
            &want.self_ending.to_string(),
        ])
    }

    async fn port_forward(&self, query: &str, client: &[u8]) -> u64 {
        let want = expected(client, true);
        let ports: Vec<&str> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| *k == "ports" || *k == "port")
            .flat_map(|(_, v)| v.split(','))
            .collect();
        let all_refused = ports.iter().all(|p| {
            p.trim()
                .parse::<u16>()
                .map_or(true, |n| n % 2 == 1 || n == 0)
        });
        let n = ports.len();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let backend = Arc::new(FuzzBackend {
            seen: seen.clone(),
            echo: self.echo,
        });
        let request = cri::PortForwardRequest {
            pod_sandbox_id: "p".into(),
            port: vec![],
        };
        let q = query.to_string();
        let out = connection(
            client,
            n == 0 || n > 127 || all_refused || want.self_ending,
            |io, gone| {
                tokio::spawn(async move {
                    crius_streaming::fuzzing::websocket_port_forward(io, request, &q, backend, gone)
                        .await
                })
            },
        )
        .await;
        if n == 0 || n > 127 {
            assert!(out.is_empty(), "{n} ports: the server answered");
            return tag(&["forward", "no ports"]);
        }
        let got = server_output(&out, &|ch| usize::from(ch) < 2 * n);
        for i in 0..n {
            for ch in [2 * i, 2 * i + 1] {
                let first = got.iter().find(|(c, _)| usize::from(*c) == ch);
                if let Some((_, p)) = first {
                    assert_eq!(p.len(), 2, "channel {ch} does not start with a port number");
                }
            }
            let data = (2 * i) as u8;
            let echoed: Vec<u8> = got
                .iter()
                .filter(|(c, _)| *c == data)
                .skip(1)
                .flat_map(|(_, p)| p.iter().copied())
                .collect();
            let sent = payload(&want, data);
            assert!(
                sent.starts_with(&echoed),
                "channel {data} echoed {} bytes that were not sent",
                echoed.len()
            );
        }
        let connects = lock(&seen).connects.len();
        tag(&[
            "forward",
            &n.min(3).to_string(),
            &connects.min(3).to_string(),
            &got.len().min(4).to_string(),
        ])
    }
}

impl Harness for Sockets {
    fn run(&mut self, input: &[u8]) -> u64 {
        let flags = input.first().copied().unwrap_or(0);
        let rest = input.get(1..).unwrap_or_default();
        let rt = &self.rt;
        if flags & 128 != 0 {
            let (query, client) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &[][..]),
            };
            let query = String::from_utf8_lossy(query).into_owned();
            rt.block_on(self.port_forward(&query, client))
        } else {
            rt.block_on(self.exec(flags, rest))
        }
    }
}

/// A client's frames (masked), as tungstenite writes them.
pub fn client_frames(messages: &[Message]) -> Vec<u8> {
    struct Sink(Vec<u8>);
    impl Read for Sink {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Ok(0)
        }
    }
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut ws = WebSocket::from_raw_socket(Sink(Vec::new()), Role::Client, None);
    for m in messages {
        if let Err(e) = ws.send(m.clone()) {
            panic!("encoding a seed frame: {e}");
        }
    }
    std::mem::take(&mut ws.get_mut().0)
}

fn bin(ch: u8, data: &[u8]) -> Message {
    let mut v = vec![ch];
    v.extend_from_slice(data);
    Message::Binary(v.into())
}

/// Seeds: `kubectl exec -i` and `exec -it` over v5 and v4, attach, and
/// `kubectl port-forward` over WebSocket.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let with = |flags: u8, prefix: &[u8], msgs: &[Message]| {
        let mut v = vec![flags];
        v.extend_from_slice(prefix);
        v.extend(client_frames(msgs));
        v
    };
    let exec_v5 = [
        bin(0, b"echo hello\n"),
        bin(0, b"exit\n"),
        bin(255, &[0]),
        Message::Close(None),
    ];
    let tty_v5 = [
        bin(4, br#"{"Width":120,"Height":40}"#),
        bin(0, b"ls -l\r"),
        bin(4, b"{\"Width\":80,\"Height\":24}\n{\"Width\":81,"),
        bin(4, b"\"Height\":25}"),
        bin(255, &[0]),
    ];
    let exec_v4 = [
        Message::Ping(b"keepalive".to_vec().into()),
        bin(0, b"data"),
        Message::Text("ignored".into()),
    ];
    let forward = [
        bin(0, b"GET / HTTP/1.0\r\n\r\n"),
        bin(2, b"x"),
        bin(255, &[0]),
    ];
    vec![
        ("exec-v5-stdin", with(0b0000_0111, b"", &exec_v5)),
        ("exec-v5-tty", with(0b0000_1011, b"", &tty_v5)),
        ("exec-v4-ping", with(0b0001_0011, b"", &exec_v4)),
        (
            "attach-v1",
            with(0b0111_0001, b"", &[bin(0, b"attached\n")]),
        ),
        (
            "port-forward",
            with(0b1000_0000, b"ports=8080,8081", &forward),
        ),
    ]
}
