//! Session tests: two sessions over an in-memory pipe, and sessions facing a
//! raw, codec-driven peer that behaves like spdystream (never sends
//! WINDOW_UPDATE) or misbehaves on purpose.

use std::future::Future;
use std::io::ErrorKind;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
use tokio::task::JoinSet;

use super::shared::{MAX_DATA_FRAME, Shared};
use super::*;
use crate::{
    Data, Decoder, Encoder, Frame, GoAway, GoAwayStatus, Headers, Ping, RstStatus, RstStream,
    SynReply, SynStream, WindowUpdate,
};

/// Upper bound for anything a test waits for.
const LIMIT: Duration = Duration::from_secs(30);

async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(LIMIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// Polls `cond` until it holds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs.iter().copied().collect()
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ ((i >> 8) as u8))
        .collect()
}

fn pair(cfg: SessionConfig) -> ((Session, Incoming), (Session, Incoming)) {
    let (a, b) = duplex(64 * 1024);
    (
        Session::new(a, Role::Client, cfg.clone()),
        Session::new(b, Role::Server, cfg),
    )
}

fn weak(session: &Session) -> Weak<Shared> {
    Arc::downgrade(&session.guard.shared)
}

async fn read_all(r: &mut (impl tokio::io::AsyncRead + Unpin)) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    r.read_to_end(&mut out).await?;
    Ok(out)
}

/// Reads until EOF or an error (which must be the session's failure).
async fn read_until_end(r: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::ConnectionAborted);
                return out;
            }
        }
    }
}

/// A peer driven frame by frame through the codec.
struct RawPeer {
    io: DuplexStream,
    enc: Encoder,
    dec: Decoder,
    buf: Vec<u8>,
}

impl RawPeer {
    async fn send(&mut self, frame: Frame) {
        let bytes = self.enc.encode_to_vec(&frame).unwrap();
        self.io.write_all(&bytes).await.unwrap();
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
    }

    async fn syn(&mut self, id: u32, pairs: &[(&str, &str)]) {
        self.send(Frame::SynStream(SynStream {
            stream_id: id,
            headers: headers(pairs),
            ..SynStream::default()
        }))
        .await;
    }

    async fn data(&mut self, id: u32, data: &[u8], fin: bool) {
        self.send(Frame::Data(Data {
            stream_id: id,
            fin,
            data: data.to_vec(),
        }))
        .await;
    }

    /// The next frame, or `None` at EOF.
    async fn recv_any(&mut self) -> Option<Frame> {
        within("raw peer frame", async {
            loop {
                if let Some(frame) = self.dec.next_frame().unwrap() {
                    return Some(frame);
                }
                let n = self.io.read(&mut self.buf).await.unwrap_or(0);
                if n == 0 {
                    return None;
                }
                self.dec.feed(&self.buf[..n]);
            }
        })
        .await
    }

    /// The next frame that is not a WINDOW_UPDATE, or `None` at EOF.
    async fn recv(&mut self) -> Option<Frame> {
        loop {
            match self.recv_any().await {
                Some(Frame::WindowUpdate(_)) => {}
                other => return other,
            }
        }
    }
}

/// A session with `role` facing a raw peer.
fn raw(role: Role, cfg: SessionConfig) -> (Session, Incoming, RawPeer) {
    let (a, b) = duplex(64 * 1024);
    let (session, incoming) = Session::new(a, role, cfg);
    let peer = RawPeer {
        io: b,
        enc: Encoder::new(),
        dec: Decoder::new(),
        buf: vec![0; 64 * 1024],
    };
    (session, incoming, peer)
}

/// Opens a stream from `opener` and accepts it on `incoming`:
/// (opener's stream, acceptor's stream).
async fn open_pair(opener: &Session, incoming: &mut Incoming) -> (Stream, Stream) {
    within("open pair", async {
        let accept = async {
            let s = incoming.accept().await.expect("a stream");
            s.reply(Headers::new()).unwrap()
        };
        let (opened, accepted) = tokio::join!(opener.open_stream(Headers::new()), accept);
        (opened.unwrap(), accepted)
    })
    .await
}

async fn accept_reply(incoming: &mut Incoming) -> Stream {
    let s = within("accept", incoming.accept()).await.expect("a stream");
    s.reply(Headers::new()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_reply_and_exchange_data() {
    let ((client, _ci), (server, mut incoming)) = pair(SessionConfig::default());
    let server_side = tokio::spawn(async move {
        let s = incoming.accept().await.expect("a stream");
        assert_eq!(s.id(), 1);
        assert_eq!(s.headers().get("streamtype"), Some("stdout"));
        let mut stream = s.reply(headers(&[("x-reply", "yes")])).unwrap();
        assert_eq!(stream.headers().get("streamtype"), Some("stdout"));
        let got = read_all(&mut stream).await.unwrap();
        assert_eq!(got, b"hello");
        stream.write_all(b"world").await.unwrap();
        stream.shutdown().await.unwrap();
        (server, incoming)
    });
    let mut stream = within(
        "open",
        client.open_stream(headers(&[("streamtype", "stdout")])),
    )
    .await
    .unwrap();
    assert_eq!(stream.id(), 1);
    assert_eq!(stream.reply_headers().get("x-reply"), Some("yes"));
    stream.write_all(b"hello").await.unwrap();
    stream.shutdown().await.unwrap();
    let got = within("read", read_all(&mut stream)).await.unwrap();
    assert_eq!(got, b"world");
    let (server, _incoming) = within("server", server_side).await.unwrap();
    // FIN went both ways: both tables are empty.
    assert_eq!(client.stream_count(), 0);
    assert_eq!(server.stream_count(), 0);
    // A second stream gets the next odd id.
    let next = tokio::spawn({
        let client = client.clone();
        async move { client.open_stream(Headers::new()).await.map(|s| s.id()) }
    });
    let mut incoming = _incoming;
    let s = within("accept 2", incoming.accept()).await.unwrap();
    assert_eq!(s.id(), 3);
    drop(s.reply(Headers::new()).unwrap());
    assert_eq!(within("open 2", next).await.unwrap(), Ok(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_opened_streams_use_even_ids() {
    let ((_client, mut ci), (server, _si)) = pair(SessionConfig::default());
    let accept = tokio::spawn(async move {
        let s = ci.accept().await.unwrap();
        let id = s.id();
        let mut stream = s.reply(Headers::new()).unwrap();
        (id, read_all(&mut stream).await.unwrap())
    });
    let mut stream = within("open", server.open_stream(Headers::new()))
        .await
        .unwrap();
    assert_eq!(stream.id(), 2);
    stream.write_all(b"pushed").await.unwrap();
    drop(stream);
    assert_eq!(
        within("accept", accept).await.unwrap(),
        (2, b"pushed".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mib_to_a_peer_that_never_updates_windows() {
    const TOTAL: usize = 10 << 20;
    let (_server, mut incoming, mut peer) = raw(Role::Server, SessionConfig::default());
    peer.syn(1, &[("streamtype", "stdout")]).await;
    let stream = accept_reply(&mut incoming).await;
    let writer = tokio::spawn(async move {
        let (_r, mut w) = stream.split();
        w.write_all(&pattern(7, TOTAL)).await.unwrap();
        w.shutdown().await.unwrap();
    });
    assert!(matches!(peer.recv().await, Some(Frame::SynReply(r)) if r.stream_id == 1));
    let mut got = Vec::with_capacity(TOTAL);
    loop {
        match peer.recv().await {
            Some(Frame::Data(d)) => {
                assert_eq!(d.stream_id, 1);
                assert!(d.data.len() <= MAX_DATA_FRAME, "frame of {}", d.data.len());
                got.extend_from_slice(&d.data);
                if d.fin {
                    break;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got.len(), TOTAL);
    assert!(got == pattern(7, TOTAL));
    within("writer", writer).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mib_echoed_between_sessions() {
    const TOTAL: usize = 10 << 20;
    let ((client, _ci), (_server, mut incoming)) = pair(SessionConfig::default());
    let echo = tokio::spawn(async move {
        let stream = incoming
            .accept()
            .await
            .unwrap()
            .reply(Headers::new())
            .unwrap();
        let (mut r, mut w) = stream.split();
        let n = tokio::io::copy(&mut r, &mut w).await.unwrap();
        w.shutdown().await.unwrap();
        n
    });
    let stream = within("open", client.open_stream(Headers::new()))
        .await
        .unwrap();
    let (mut r, mut w) = stream.split();
    let sender = tokio::spawn(async move {
        for chunk in pattern(3, TOTAL).chunks(100_000) {
            w.write_all(chunk).await.unwrap();
        }
        w.shutdown().await.unwrap();
    });
    let got = within("echo", read_all(&mut r)).await.unwrap();
    assert_eq!(got.len(), TOTAL);
    assert!(got == pattern(3, TOTAL));
    within("sender", sender).await.unwrap();
    assert_eq!(within("echo task", echo).await.unwrap(), TOTAL as u64);
}

/// A peer that enforces the SPDY/3.1 windows (64 KiB per stream and for
/// the session) still gets 1 MiB through: we send WINDOW_UPDATE as our
/// reader consumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_updates_follow_consumption() {
    const TOTAL: usize = 1 << 20;
    let (_server, mut incoming, mut peer) = raw(Role::Server, SessionConfig::default());
    peer.syn(1, &[]).await;
    let stream = accept_reply(&mut incoming).await;
    let reader = tokio::spawn(async move {
        let (mut r, _w) = stream.split();
        read_all(&mut r).await.unwrap()
    });
    assert!(matches!(peer.recv().await, Some(Frame::SynReply(_))));
    let data = pattern(9, TOTAL);
    let (mut stream_window, mut session_window) = (65_536i64, 65_536i64);
    let mut sent = 0;
    while sent < TOTAL {
        let room = stream_window.min(session_window).max(0) as usize;
        if room == 0 {
            match peer.recv_any().await {
                Some(Frame::WindowUpdate(WindowUpdate { stream_id, delta })) => {
                    if stream_id == 0 {
                        session_window += i64::from(delta);
                    } else {
                        assert_eq!(stream_id, 1);
                        stream_window += i64::from(delta);
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
            continue;
        }
        let n = room.min(10_000).min(TOTAL - sent);
        peer.data(1, &data[sent..sent + n], sent + n == TOTAL).await;
        sent += n;
        stream_window -= n as i64;
        session_window -= n as i64;
    }
    let got = within("reader", reader).await.unwrap();
    assert!(got == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_each_direction() {
    let ((client, _ci), (server, mut incoming)) = pair(SessionConfig::default());
    let (mut stream, accepted) = open_pair(&client, &mut incoming).await;
    let client_stream = &mut stream;
    let (mut sr, mut sw) = accepted.split();
    // Client closes its direction first; the server keeps writing.
    client_stream.write_all(b"request").await.unwrap();
    client_stream.shutdown().await.unwrap();
    let err = client_stream.write_all(b"more").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokenPipe);
    assert_eq!(
        within("server read", read_all(&mut sr)).await.unwrap(),
        b"request"
    );
    for i in 0..10u8 {
        sw.write_all(&[i; 1000]).await.unwrap();
    }
    let mut buf = vec![0; 10_000];
    within("client read", client_stream.read_exact(&mut buf))
        .await
        .unwrap();
    assert_eq!(buf[9_999], 9);
    // Open until the server closes its direction too.
    assert_eq!(server.stream_count(), 1);
    sw.shutdown().await.unwrap();
    let mut rest = Vec::new();
    within("client eof", client_stream.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(rest.is_empty());
    assert_eq!(server.stream_count(), 0);
    assert_eq!(client.stream_count(), 0);
    // Shutting down twice is fine.
    sw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_by_peer_fails_both_halves() {
    let ((client, _ci), (server, mut incoming)) = pair(SessionConfig::default());
    let (stream, accepted) = open_pair(&client, &mut incoming).await;
    let (mut sr, mut sw) = accepted.split();
    stream.reset(RstStatus::CANCEL);
    assert_eq!(client.stream_count(), 0);
    let err = within("read", read_all(&mut sr)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
    let err = sw.write_all(b"x").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
    assert_eq!(server.stream_count(), 0);
    // Our own halves fail too.
    let (mut cr, mut cw) = stream.split();
    assert_eq!(
        cw.write_all(b"x").await.unwrap_err().kind(),
        ErrorKind::ConnectionReset
    );
    assert_eq!(
        read_all(&mut cr).await.unwrap_err().kind(),
        ErrorKind::ConnectionReset
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_instead_of_reply_fails_open_stream() {
    let ((client, _ci), (server, mut incoming)) = pair(SessionConfig::default());
    let refuse = tokio::spawn(async move {
        incoming
            .accept()
            .await
            .unwrap()
            .reset(RstStatus::REFUSED_STREAM);
        // Dropping unanswered refuses too.
        drop(incoming.accept().await.unwrap());
        incoming
    });
    assert_eq!(
        within("open", client.open_stream(Headers::new()))
            .await
            .unwrap_err(),
        SessionError::Reset(RstStatus::REFUSED_STREAM)
    );
    assert_eq!(
        within("open", client.open_stream(Headers::new()))
            .await
            .unwrap_err(),
        SessionError::Reset(RstStatus::REFUSED_STREAM)
    );
    let _incoming = refuse.await.unwrap();
    assert_eq!(client.stream_count(), 0);
    assert_eq!(server.stream_count(), 0);
}

#[tokio::test]
async fn data_received_before_a_reset_is_still_read() {
    let (_server, mut incoming, mut peer) = raw(Role::Server, SessionConfig::default());
    peer.syn(1, &[]).await;
    let mut stream = accept_reply(&mut incoming).await;
    peer.data(1, b"partial", false).await;
    peer.send(Frame::RstStream(RstStream {
        stream_id: 1,
        status: RstStatus::CANCEL,
    }))
    .await;
    let mut buf = [0u8; 7];
    within("read", stream.read_exact(&mut buf)).await.unwrap();
    assert_eq!(&buf, b"partial");
    let err = within("read", stream.read(&mut buf)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
}

#[tokio::test]
async fn local_reset_is_sent_after_the_reply() {
    let (server, mut incoming, mut peer) = raw(Role::Server, SessionConfig::default());
    peer.syn(1, &[]).await;
    let stream = accept_reply(&mut incoming).await;
    stream.reset(RstStatus(0));
    assert!(matches!(peer.recv().await, Some(Frame::SynReply(r)) if r.stream_id == 1));
    // Status 0 would kill a spdystream session: it goes out as CANCEL.
    assert_eq!(
        peer.recv().await,
        Some(Frame::RstStream(RstStream {
            stream_id: 1,
            status: RstStatus::CANCEL
        }))
    );
    assert_eq!(server.stream_count(), 0);
}

#[tokio::test]
async fn ping_from_the_peer_is_answered() {
    let (_server, _incoming, mut peer) = raw(Role::Server, SessionConfig::default());
    peer.send(Frame::Ping(Ping { id: 1 })).await;
    assert_eq!(peer.recv().await, Some(Frame::Ping(Ping { id: 1 })));
    // An answer to a ping we never sent (our parity) is ignored.
    peer.send(Frame::Ping(Ping { id: 2 })).await;
    peer.send(Frame::Ping(Ping { id: 3 })).await;
    assert_eq!(peer.recv().await, Some(Frame::Ping(Ping { id: 3 })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_round_trips_between_sessions() {
    let ((client, _ci), (server, _si)) = pair(SessionConfig::default());
    within("client ping", client.ping()).await.unwrap();
    within("server ping", server.ping()).await.unwrap();
    within("client ping", client.ping()).await.unwrap();
    assert!(lock(&client.guard.shared.inner).pings.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_streams_interleave_intact() {
    const STREAMS: usize = 100;
    const LEN: usize = 64 * 1024;
    let ((client, _ci), (server, mut incoming)) = pair(SessionConfig::default());
    // The server echoes every stream.
    let acceptor = tokio::spawn(async move {
        let mut echoes = JoinSet::new();
        while let Some(s) = incoming.accept().await {
            let stream = s.reply(Headers::new()).unwrap();
            echoes.spawn(async move {
                let (mut r, mut w) = stream.split();
                tokio::io::copy(&mut r, &mut w).await.unwrap();
                w.shutdown().await.unwrap();
            });
        }
        while let Some(r) = echoes.join_next().await {
            r.unwrap();
        }
    });
    let mut clients = JoinSet::new();
    for i in 0..STREAMS {
        let client = client.clone();
        clients.spawn(async move {
            let index = i.to_string();
            let stream = client
                .open_stream(headers(&[("index", &index)]))
                .await
                .unwrap();
            assert_eq!(stream.headers().get("index"), Some(index.as_str()));
            let (mut r, mut w) = stream.split();
            let data = pattern(i as u8, LEN);
            let expected = data.clone();
            let send = tokio::spawn(async move {
                // Small, uneven writes so frames of all streams interleave.
                for chunk in data.chunks(1000 + i * 7) {
                    w.write_all(chunk).await.unwrap();
                    tokio::task::yield_now().await;
                }
                w.shutdown().await.unwrap();
            });
            let got = read_all(&mut r).await.unwrap();
            send.await.unwrap();
            assert!(got == expected, "stream {i} corrupted");
        });
    }
    within("streams", async {
        while let Some(r) = clients.join_next().await {
            r.unwrap();
        }
    })
    .await;
    assert_eq!(client.stream_count(), 0);
    eventually("server table empty", || server.stream_count() == 0).await;
    client.close();
    within("acceptor", acceptor).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_socket_dropped_mid_stream() {
    let (server, mut incoming, mut peer) = raw(Role::Server, SessionConfig::default());
    let weak = weak(&server);
    peer.syn(1, &[]).await;
    peer.syn(3, &[]).await;
    let (mut r1, mut w1) = accept_reply(&mut incoming).await.split();
    let mut s3 = accept_reply(&mut incoming).await;
    peer.data(1, b"0123456789", false).await;
    let mut buf = [0u8; 4];
    within("read", r1.read_exact(&mut buf)).await.unwrap();
    drop(peer);
    // Buffered data first, then EOF, or an error if our writer hit the
    // broken pipe before the reader saw EOF.
    assert_eq!(within("rest", read_until_end(&mut r1)).await, b"456789");
    assert_eq!(within("s3", read_until_end(&mut s3)).await, b"");
    within("closed", server.closed()).await;
    assert!(server.is_closed());
    assert_eq!(
        w1.write_all(b"x").await.unwrap_err().kind(),
        ErrorKind::BrokenPipe
    );
    assert!(within("accept", incoming.accept()).await.is_none());
    assert_eq!(
        server.open_stream(Headers::new()).await.unwrap_err(),
        SessionError::Closed
    );
    drop((server, incoming, r1, w1, s3));
    eventually("shared freed", || weak.strong_count() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_open_fails_when_the_socket_goes() {
    let (client, _ci, mut peer) = raw(Role::Client, SessionConfig::default());
    let open = tokio::spawn({
        let client = client.clone();
        async move { client.open_stream(Headers::new()).await }
    });
    assert!(matches!(peer.recv().await, Some(Frame::SynStream(s)) if s.stream_id == 1));
    drop(peer);
    assert_eq!(
        within("open", open).await.unwrap().unwrap_err(),
        SessionError::Closed
    );
    within("closed", client.closed()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_reader_does_not_block_others() {
    let cfg = SessionConfig {
        max_stream_buffer: 16 * 1024,
        ..SessionConfig::default()
    };
    let (_server, mut incoming, mut peer) = raw(Role::Server, cfg);
    peer.syn(1, &[]).await;
    peer.syn(3, &[]).await;
    let (r1, _w1) = accept_reply(&mut incoming).await.split();
    let mut s3 = accept_reply(&mut incoming).await;
    drop(r1);
    let sender = tokio::spawn(async move {
        for _ in 0..64 {
            peer.data(1, &[1; 16 * 1024], false).await;
        }
        peer.data(3, b"still flowing", true).await;
        peer
    });
    assert_eq!(
        within("stream 3", read_all(&mut s3)).await.unwrap(),
        b"still flowing"
    );
    let mut peer = within("sender", sender).await.unwrap();
    // The discarded megabyte was acknowledged.
    peer.data(1, b"", true).await;
    let mut stream_acked = 0u64;
    while stream_acked < (1 << 20) - 32 * 1024 {
        match peer.recv_any().await {
            Some(Frame::WindowUpdate(u)) if u.stream_id == 1 => stream_acked += u64::from(u.delta),
            Some(_) => {}
            None => panic!("EOF"),
        }
    }
}

/// A full stream buffer stops the session reading (head-of-line blocking,
/// as in spdystream) until that stream's reader catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_buffer_blocks_the_connection_until_read() {
    let cfg = SessionConfig {
        max_stream_buffer: 16 * 1024,
        ..SessionConfig::default()
    };
    let (_server, mut incoming, mut peer) = raw(Role::Server, cfg);
    peer.syn(1, &[]).await;
    peer.syn(3, &[]).await;
    let mut s1 = accept_reply(&mut incoming).await;
    let mut s3 = accept_reply(&mut incoming).await;
    for _ in 0..4 {
        peer.data(1, &[1; 10 * 1024], false).await;
    }
    peer.data(3, b"behind", true).await;
    let mut buf = [0u8; 6];
    let early = tokio::time::timeout(Duration::from_millis(200), s3.read_exact(&mut buf)).await;
    assert!(early.is_err(), "stream 3 overtook a full stream 1");
    let mut big = vec![0u8; 40 * 1024];
    within("s1", s1.read_exact(&mut big)).await.unwrap();
    within("s3", s3.read_exact(&mut buf)).await.unwrap();
    assert_eq!(&buf, b"behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_stops_new_streams_and_closes_when_the_last_ends() {
    let ((client, mut ci), (server, mut incoming)) = pair(SessionConfig::default());
    let (mut cs, mut ss) = open_pair(&client, &mut incoming).await;
    within("goaway", server.goaway()).await;
    assert_eq!(
        server.open_stream(Headers::new()).await.unwrap_err(),
        SessionError::GoingAway
    );
    assert!(within("accept", incoming.accept()).await.is_none());
    eventually("client saw GOAWAY", || {
        lock(&client.guard.shared.inner).goaway_received
    })
    .await;
    assert_eq!(
        client.open_stream(Headers::new()).await.unwrap_err(),
        SessionError::GoingAway
    );
    assert!(within("client accept", ci.accept()).await.is_none());
    // The open stream still works both ways.
    cs.write_all(b"ping").await.unwrap();
    cs.shutdown().await.unwrap();
    assert_eq!(
        within("server read", read_all(&mut ss)).await.unwrap(),
        b"ping"
    );
    ss.write_all(b"pong").await.unwrap();
    assert!(!server.is_closed());
    ss.shutdown().await.unwrap();
    assert_eq!(
        within("client read", read_all(&mut cs)).await.unwrap(),
        b"pong"
    );
    // No stream left: both sessions close.
    within("server closed", server.closed()).await;
    within("client closed", client.closed()).await;
}

#[tokio::test]
async fn goaway_refuses_later_peer_streams() {
    let (server, mut incoming, mut peer) = raw(Role::Server, SessionConfig::default());
    peer.syn(1, &[]).await;
    let stream = accept_reply(&mut incoming).await;
    within("goaway", server.goaway()).await;
    assert!(matches!(peer.recv().await, Some(Frame::SynReply(_))));
    assert_eq!(
        peer.recv().await,
        Some(Frame::GoAway(GoAway {
            last_good_stream_id: 1,
            status: GoAwayStatus::OK
        }))
    );
    peer.syn(3, &[]).await;
    assert_eq!(
        peer.recv().await,
        Some(Frame::RstStream(RstStream {
            stream_id: 3,
            status: RstStatus::REFUSED_STREAM
        }))
    );
    assert!(within("accept", incoming.accept()).await.is_none());
    peer.data(1, b"", true).await;
    drop(stream);
    // Our FIN, then our side of the socket closes.
    assert!(matches!(peer.recv().await, Some(Frame::Data(d)) if d.fin && d.stream_id == 1));
    assert_eq!(peer.recv().await, None);
    within("closed", server.closed()).await;
}

#[tokio::test]
async fn peer_goaway_fails_unanswered_opens() {
    let (client, _ci, mut peer) = raw(Role::Client, SessionConfig::default());
    let open = tokio::spawn({
        let client = client.clone();
        async move { client.open_stream(Headers::new()).await }
    });
    assert!(matches!(peer.recv().await, Some(Frame::SynStream(s)) if s.stream_id == 1));
    peer.send(Frame::GoAway(GoAway {
        last_good_stream_id: 0,
        status: GoAwayStatus::OK,
    }))
    .await;
    assert_eq!(
        within("open", open).await.unwrap().unwrap_err(),
        SessionError::GoingAway
    );
    // Nothing left: the session closes.
    assert_eq!(peer.recv().await, None);
    within("closed", client.closed()).await;
}

#[tokio::test]
async fn data_for_an_unknown_stream_is_reset() {
    let (_server, mut incoming, mut peer) = raw(Role::Server, SessionConfig::default());
    peer.data(99, b"who?", false).await;
    assert_eq!(
        peer.recv().await,
        Some(Frame::RstStream(RstStream {
            stream_id: 99,
            status: RstStatus::INVALID_STREAM
        }))
    );
    // The session lives on.
    peer.syn(101, &[]).await;
    let mut stream = accept_reply(&mut incoming).await;
    peer.data(101, b"fine", true).await;
    assert_eq!(
        within("read", read_all(&mut stream)).await.unwrap(),
        b"fine"
    );
}

#[tokio::test]
async fn data_after_fin_is_a_stream_error() {
    let (server, mut incoming, mut peer) = raw(Role::Server, SessionConfig::default());
    peer.syn(1, &[]).await;
    let _stream = accept_reply(&mut incoming).await;
    peer.data(1, b"", true).await;
    peer.data(1, b"late", false).await;
    assert!(matches!(peer.recv().await, Some(Frame::SynReply(_))));
    assert_eq!(
        peer.recv().await,
        Some(Frame::RstStream(RstStream {
            stream_id: 1,
            status: RstStatus::STREAM_ALREADY_CLOSED
        }))
    );
    assert!(!server.is_closed());
}

#[tokio::test]
async fn bad_frames_end_the_session_with_goaway() {
    let (server, mut incoming, mut peer) = raw(Role::Server, SessionConfig::default());
    peer.syn(1, &[]).await;
    let mut stream = accept_reply(&mut incoming).await;
    // A control frame of SPDY version 2.
    peer.send_raw(&[0x80, 0x02, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1])
        .await;
    assert!(matches!(peer.recv().await, Some(Frame::SynReply(_))));
    assert_eq!(
        peer.recv().await,
        Some(Frame::GoAway(GoAway {
            last_good_stream_id: 1,
            status: GoAwayStatus::PROTOCOL_ERROR
        }))
    );
    assert_eq!(peer.recv().await, None);
    within("closed", server.closed()).await;
    let err = within("read", read_all(&mut stream)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionAborted);
}

#[tokio::test]
async fn stream_ids_going_backwards_end_the_session() {
    let (server, _incoming, mut peer) = raw(Role::Server, SessionConfig::default());
    peer.syn(5, &[]).await;
    peer.syn(3, &[]).await;
    assert_eq!(
        peer.recv().await,
        Some(Frame::GoAway(GoAway {
            last_good_stream_id: 5,
            status: GoAwayStatus::PROTOCOL_ERROR
        }))
    );
    within("closed", server.closed()).await;
}

#[tokio::test]
async fn bad_header_block_resets_only_that_stream() {
    let (server, mut incoming, mut peer) = raw(Role::Server, SessionConfig::default());
    // Upper-case header names are a stream error; encode one by hand
    // through the shared compression context.
    let mut deflater = crate::compress::Deflater::default();
    let mut block = Vec::new();
    block.extend_from_slice(&1u32.to_be_bytes());
    block.extend_from_slice(&4u32.to_be_bytes());
    block.extend_from_slice(b"Host");
    block.extend_from_slice(&1u32.to_be_bytes());
    block.extend_from_slice(b"x");
    let mut compressed = Vec::new();
    deflater.compress(&block, &mut compressed).unwrap();
    let mut frame = vec![0x80, 0x03, 0x00, 0x01];
    frame.extend_from_slice(&((10 + compressed.len()) as u32).to_be_bytes());
    frame.extend_from_slice(&1u32.to_be_bytes());
    frame.extend_from_slice(&0u32.to_be_bytes());
    frame.extend_from_slice(&[0, 0]);
    frame.extend_from_slice(&compressed);
    peer.send_raw(&frame).await;
    assert_eq!(
        peer.recv().await,
        Some(Frame::RstStream(RstStream {
            stream_id: 1,
            status: RstStatus::PROTOCOL_ERROR
        }))
    );
    // The same compression context carries on for the next stream.
    block.clear();
    block.extend_from_slice(&1u32.to_be_bytes());
    block.extend_from_slice(&4u32.to_be_bytes());
    block.extend_from_slice(b"host");
    block.extend_from_slice(&1u32.to_be_bytes());
    block.extend_from_slice(b"y");
    compressed.clear();
    deflater.compress(&block, &mut compressed).unwrap();
    let mut frame = vec![0x80, 0x03, 0x00, 0x01];
    frame.extend_from_slice(&((10 + compressed.len()) as u32).to_be_bytes());
    frame.extend_from_slice(&3u32.to_be_bytes());
    frame.extend_from_slice(&0u32.to_be_bytes());
    frame.extend_from_slice(&[0, 0]);
    frame.extend_from_slice(&compressed);
    peer.send_raw(&frame).await;
    let s = within("accept", incoming.accept()).await.unwrap();
    assert_eq!(s.id(), 3);
    assert_eq!(s.headers().get("host"), Some("y"));
    assert!(!server.is_closed());
}

#[tokio::test]
async fn extra_streams_are_refused() {
    let cfg = SessionConfig {
        max_streams: 2,
        ..SessionConfig::default()
    };
    let (server, mut incoming, mut peer) = raw(Role::Server, cfg);
    peer.syn(1, &[]).await;
    peer.syn(3, &[]).await;
    peer.syn(5, &[]).await;
    assert_eq!(
        peer.recv().await,
        Some(Frame::RstStream(RstStream {
            stream_id: 5,
            status: RstStatus::REFUSED_STREAM
        }))
    );
    let _a = accept_reply(&mut incoming).await;
    let _b = accept_reply(&mut incoming).await;
    assert_eq!(server.stream_count(), 2);
    assert_eq!(
        server.open_stream(Headers::new()).await.unwrap_err(),
        SessionError::TooManyStreams(2)
    );
}

#[tokio::test]
async fn cancelled_open_resets_the_stream() {
    let (client, _ci, mut peer) = raw(Role::Client, SessionConfig::default());
    let open = tokio::time::timeout(
        Duration::from_millis(50),
        client.open_stream(Headers::new()),
    )
    .await;
    assert!(open.is_err());
    assert_eq!(client.stream_count(), 0);
    assert!(matches!(peer.recv().await, Some(Frame::SynStream(s)) if s.stream_id == 1));
    assert_eq!(
        peer.recv().await,
        Some(Frame::RstStream(RstStream {
            stream_id: 1,
            status: RstStatus::CANCEL
        }))
    );
    // A late reply for it is ignored.
    peer.send(Frame::SynReply(SynReply {
        stream_id: 1,
        ..SynReply::default()
    }))
    .await;
    peer.send(Frame::Ping(Ping { id: 2 })).await;
    assert_eq!(peer.recv().await, Some(Frame::Ping(Ping { id: 2 })));
}

#[tokio::test]
async fn invalid_headers_are_refused_before_sending() {
    let (client, _ci, mut peer) = raw(Role::Client, SessionConfig::default());
    let mut bad = Headers::new();
    bad.add("x", "a\0b");
    assert!(matches!(
        client.open_stream(bad.clone()).await,
        Err(SessionError::InvalidHeaders(_))
    ));
    // Nothing went out; the compression context is intact.
    let open = tokio::spawn({
        let client = client.clone();
        async move { client.open_stream(headers(&[("ok", "1")])).await }
    });
    match peer.recv().await {
        Some(Frame::SynStream(s)) => {
            assert_eq!(s.stream_id, 1);
            assert_eq!(s.headers.get("ok"), Some("1"));
        }
        other => panic!("unexpected {other:?}"),
    }
    peer.send(Frame::SynReply(SynReply {
        stream_id: 1,
        ..SynReply::default()
    }))
    .await;
    within("open", open).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_short_streams_keep_the_table_small() {
    let ((client, _ci), (server, mut incoming)) = pair(SessionConfig::default());
    let server2 = server.clone();
    let acceptor = tokio::spawn(async move {
        let mut peak = 0;
        while let Some(s) = incoming.accept().await {
            peak = peak.max(server2.stream_count());
            let mut stream = s.reply(Headers::new()).unwrap();
            let got = read_all(&mut stream).await.unwrap();
            stream.write_all(&got).await.unwrap();
            stream.shutdown().await.unwrap();
        }
        peak
    });
    within("5000 streams", async {
        for i in 0..5000u32 {
            let mut stream = client.open_stream(Headers::new()).await.unwrap();
            stream.write_all(&i.to_be_bytes()).await.unwrap();
            stream.shutdown().await.unwrap();
            assert_eq!(read_all(&mut stream).await.unwrap(), i.to_be_bytes());
            assert_eq!(client.stream_count(), 0);
        }
    })
    .await;
    assert_eq!(server.stream_count(), 0);
    client.close();
    let peak = within("acceptor", acceptor).await.unwrap();
    assert!(peak <= 2, "server table peaked at {peak}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_end_when_every_handle_is_dropped() {
    let ((client, mut ci), (server, si)) = pair(SessionConfig::default());
    let weak_server = weak(&server);
    let weak_client = weak(&client);
    // A stream the server wrote to and dropped: its data and FIN still go out.
    let (stream, mut cs) = open_pair(&server, &mut ci).await;
    let (_r, mut w) = stream.split();
    w.write_all(b"last words").await.unwrap();
    drop((server, si, w, _r));
    assert_eq!(
        within("read", read_all(&mut cs)).await.unwrap(),
        b"last words"
    );
    // The server session drained and closed the socket; the client sees EOF.
    within("client closed", client.closed()).await;
    eventually("server tasks gone", || weak_server.strong_count() == 0).await;
    drop((client, ci, cs));
    eventually("client tasks gone", || weak_client.strong_count() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_ends_everything_at_once() {
    let ((client, _ci), (server, mut incoming)) = pair(SessionConfig::default());
    let (cs, accepted) = open_pair(&client, &mut incoming).await;
    let (mut sr, mut sw) = accepted.split();
    let before = server.last_activity();
    let reader = tokio::spawn(async move { read_all(&mut sr).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    server.close();
    assert_eq!(within("reader", reader).await.unwrap().unwrap(), b"");
    assert_eq!(
        sw.write_all(b"x").await.unwrap_err().kind(),
        ErrorKind::BrokenPipe
    );
    assert!(within("accept", incoming.accept()).await.is_none());
    within("server closed", server.closed()).await;
    // The peer sees the socket go.
    within("client closed", client.closed()).await;
    let (mut cr, _cw) = cs.split();
    assert_eq!(within("client read", read_all(&mut cr)).await.unwrap(), b"");
    assert!(server.last_activity() >= before);
    assert_eq!(server.ping().await.unwrap_err(), SessionError::Closed);
}

#[tokio::test]
async fn last_activity_tracks_frames() {
    let (server, _incoming, mut peer) = raw(Role::Server, SessionConfig::default());
    let start = server.last_activity();
    tokio::time::sleep(Duration::from_millis(20)).await;
    peer.send(Frame::Ping(Ping { id: 1 })).await;
    assert!(peer.recv().await.is_some());
    assert!(server.last_activity() >= start + Duration::from_millis(20));
}

/// Reads from a pipe; every write fails.
struct FailingWrites(DuplexStream);

impl tokio::io::AsyncRead for FailingWrites {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for FailingWrites {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        _buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(Err(ErrorKind::BrokenPipe.into()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_half_still_delivers_what_the_peer_sent() {
    let (a, b) = duplex(64 * 1024);
    let (server, mut incoming) =
        Session::new(FailingWrites(a), Role::Server, SessionConfig::default());
    let mut peer = RawPeer {
        io: b,
        enc: Encoder::new(),
        dec: Decoder::new(),
        buf: vec![0; 1024],
    };
    peer.syn(1, &[]).await;
    // Our SYN_REPLY is the first write, and it fails.
    let stream = accept_reply(&mut incoming).await;
    let (mut r, mut w) = stream.split();
    eventually("write failure noticed", || {
        lock(&server.guard.shared.inner).write_failed
    })
    .await;
    assert_eq!(
        w.write_all(b"x").await.unwrap_err().kind(),
        ErrorKind::BrokenPipe
    );
    assert_eq!(
        server.open_stream(Headers::new()).await.unwrap_err(),
        SessionError::Closed
    );
    assert!(!server.is_closed());
    // The peer's data still arrives.
    peer.data(1, b"after the break", true).await;
    assert_eq!(
        within("read", read_all(&mut r)).await.unwrap(),
        b"after the break"
    );
    drop(peer);
    within("closed", server.closed()).await;
}
