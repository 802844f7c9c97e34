//! Port forwarding over SPDY (several connections in one session) and WebSocket.

use crius_e2e::stream::*;
use crius_spdy::session::{Stream, StreamReader};
use crius_streaming::StreamingConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::fake::*;

/// Opens the error and data streams of port-forward request `id` to `port`; the
/// client's side of the error stream is closed at once, as kubectl does.
async fn pair(conn: &Spdy, port: &str, id: u32) -> (Stream, StreamReader) {
    let id = id.to_string();
    let headers = [("port", port), ("requestID", id.as_str())];
    let (err_r, mut err_w) = conn.open("error", &headers).await.unwrap().split();
    err_w.shutdown().await.unwrap();
    let data = conn.open("data", &headers).await.unwrap();
    (data, err_r)
}

/// Sends `payload` on a data stream, half-closes it and reads the answer to its end.
async fn round_trip(data: Stream, payload: Vec<u8>) -> Vec<u8> {
    let (r, mut w) = data.split();
    w.write_all(&payload).await.unwrap();
    w.shutdown().await.unwrap();
    tokio::time::timeout(DEADLINE, read_all(r)).await.unwrap()
}

#[tokio::test]
async fn spdy_forwards_several_connections_in_one_session() {
    let h = Harness::start(config()).await;
    let port = echo_server().await;
    let url = h.port_forward(&[]);
    let conn = spdy_connect(&url, &["portforward.k8s.io"]).await.unwrap();
    assert_eq!(conn.protocol, "portforward.k8s.io");
    let port_s = port.to_string();
    let mut tasks = Vec::new();
    for id in 1..=8u32 {
        let (data, err) = pair(&conn, &port_s, id).await;
        let payload = format!("connection {id} ").repeat(1000).into_bytes();
        tasks.push(tokio::spawn(async move {
            let back = round_trip(data, payload.clone()).await;
            let err = read_all(err).await;
            (back == payload, err)
        }));
    }
    for t in tasks {
        let (same, err) = t.await.unwrap();
        assert!(same, "a connection got someone else's bytes");
        assert!(err.is_empty(), "{:?}", String::from_utf8_lossy(&err));
    }
    let connects = h.fake.connects.lock().unwrap().clone();
    assert_eq!(connects, vec![(POD.to_string(), port); 8]);

    // Nothing listens: the error stream says so, and the session goes on.
    let closed = closed_port();
    let (data, err) = pair(&conn, &closed.to_string(), 100).await;
    let msg = String::from_utf8_lossy(&read_all(err).await).to_string();
    assert!(
        msg.starts_with(&format!("error forwarding port {closed} to pod {POD}: ")),
        "{msg:?}"
    );
    drop(data);
    // A bad port never reaches the backend.
    let (_data, err) = pair(&conn, "0", 101).await;
    let msg = String::from_utf8_lossy(&read_all(err).await).to_string();
    assert!(msg.contains("invalid port"), "{msg:?}");
    assert_eq!(h.fake.connects.lock().unwrap().len(), 9);
    let (data, _) = pair(&conn, &port_s, 102).await;
    assert_eq!(
        round_trip(data, b"still here".to_vec()).await,
        b"still here"
    );
    conn.session.close();
}

#[tokio::test]
async fn spdy_pairs_not_completed_in_time_are_reset() {
    let h = Harness::start(StreamingConfig {
        stream_creation_timeout_secs: 1,
        ..config()
    })
    .await;
    let port = echo_server().await.to_string();
    let url = h.port_forward(&[]);
    let conn = spdy_connect(&url, &["portforward.k8s.io"]).await.unwrap();
    // An error stream whose data stream never comes.
    let lone = conn
        .open("error", &[("port", &port), ("requestID", "1")])
        .await
        .unwrap();
    let (mut r, _w) = lone.split();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(DEADLINE, r.read_to_end(&mut buf))
        .await
        .expect("the lone stream was not reset");
    assert!(read.is_err() || buf.is_empty(), "{read:?} {buf:?}");
    assert!(h.fake.connects.lock().unwrap().is_empty());
    // The session itself is fine.
    let (data, _) = pair(&conn, &port, 2).await;
    assert_eq!(round_trip(data, b"after".to_vec()).await, b"after");
}

#[tokio::test]
async fn spdy_tunnelled_in_websocket_forwards_like_spdy() {
    // client-go's tunnelling dialer (kubectl, critest -websocket-portforward): a
    // WebSocket offering only the SPDY protocol with the `SPDY/3.1+` prefix, then an
    // SPDY session in its binary messages, ports in the stream headers.
    let h = Harness::start(config()).await;
    let port = echo_server().await;
    let url = h.port_forward(&[]);
    let conn = ws_tunnel_connect(&url, &["SPDY/3.1+portforward.k8s.io"])
        .await
        .unwrap();
    assert_eq!(conn.protocol, "SPDY/3.1+portforward.k8s.io");
    let port_s = port.to_string();
    let mut tasks = Vec::new();
    for id in 1..=4u32 {
        let (data, err) = pair(&conn, &port_s, id).await;
        // Larger than one tunnel message, so it is carried in several.
        let payload = format!("tunnelled {id} ").repeat(20_000).into_bytes();
        tasks.push(tokio::spawn(async move {
            let back = round_trip(data, payload.clone()).await;
            let err = read_all(err).await;
            (back == payload, err)
        }));
    }
    for t in tasks {
        let (same, err) = t.await.unwrap();
        assert!(same, "a tunnelled connection got other bytes");
        assert!(err.is_empty(), "{:?}", String::from_utf8_lossy(&err));
    }
    assert_eq!(
        h.fake.connects.lock().unwrap().clone(),
        vec![(POD.to_string(), port); 4]
    );
    let closed = closed_port();
    let (_data, err) = pair(&conn, &closed.to_string(), 9).await;
    let msg = String::from_utf8_lossy(&read_all(err).await).to_string();
    assert!(
        msg.starts_with(&format!("error forwarding port {closed} to pod {POD}: ")),
        "{msg:?}"
    );
    conn.session.close();
}

#[tokio::test]
async fn websocket_without_a_protocol_in_common_is_refused() {
    let h = Harness::start(config()).await;
    let url = h.port_forward(&[]);
    let err = ws_connect(&url, &["SPDY/3.1+v9.portforward.k8s.io"])
        .await
        .err()
        .expect("an unknown tunnelled protocol was accepted");
    assert!(err.to_string().contains("400"), "{err}");
}

/// Reads the opening message of each of `n` channels: the port number, little endian.
async fn opened(ws: &mut Ws, ports: &[u16]) {
    for (i, port) in ports.iter().enumerate() {
        for ch in [2 * i, 2 * i + 1] {
            let (got, data) = ws.recv().await.unwrap().unwrap();
            assert_eq!(usize::from(got), ch);
            assert_eq!(data, port.to_le_bytes());
        }
    }
}

#[tokio::test]
async fn websocket_forwards_the_ports_of_the_query_on_channel_pairs() {
    let h = Harness::start(config()).await;
    let (a, b) = (echo_server().await, echo_server().await);
    let url = h.port_forward(&[]);
    let mut ws = ws_connect(&format!("{url}?ports={a},{b}"), &["v4.channel.k8s.io"])
        .await
        .unwrap();
    assert_eq!(ws.protocol, "v4.channel.k8s.io");
    opened(&mut ws, &[a, b]).await;
    ws.send(0, b"to a").await.unwrap();
    ws.send(2, b"to b").await.unwrap();
    // Done sending on both: the close signal.
    ws.send(255, &[0]).await.unwrap();
    ws.send(255, &[2]).await.unwrap();
    let ch = ws.collect(DEADLINE).await.unwrap();
    assert_eq!(ch[0], b"to a");
    assert_eq!(ch[2], b"to b");
    assert!(ch[1].is_empty() && ch[3].is_empty());
    let mut connects = h.fake.connects.lock().unwrap().clone();
    connects.sort();
    let mut want = vec![(POD.to_string(), a), (POD.to_string(), b)];
    want.sort();
    assert_eq!(connects, want);
}

#[tokio::test]
async fn websocket_without_a_query_forwards_the_requests_ports() {
    let h = Harness::start(config()).await;
    let a = echo_server().await;
    let closed = closed_port();
    let url = h.port_forward(&[i32::from(a), i32::from(closed)]);
    let mut ws = ws_connect(&url, &["channel.k8s.io"]).await.unwrap();
    opened(&mut ws, &[a, closed]).await;
    ws.send(0, b"ping").await.unwrap();
    ws.send(255, &[0]).await.unwrap();
    let ch = ws.collect(DEADLINE).await.unwrap();
    assert_eq!(ch[0], b"ping");
    let msg = String::from_utf8_lossy(&ch[3]).to_string();
    assert!(
        msg.starts_with(&format!("error forwarding port {closed} to pod {POD}")),
        "{msg:?}"
    );
}
