//! Exec and attach over SPDY and WebSocket, every protocol version.

use crius_e2e::stream::*;
use crius_spdy::session::{Role, Session, SessionConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::fake::*;

const SPDY_VERSIONS: [&str; 5] = [
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// Whether the protocol reports how a command ended as a JSON `Status` (v4 and v5).
fn json_status(protocol: &str) -> bool {
    protocol.starts_with("v4.") || protocol.starts_with("v5.")
}

/// Checks the error stream of a command that exited with `code` under `protocol`.
fn assert_exit(protocol: &str, error: &[u8], code: i32) {
    let text = String::from_utf8_lossy(error);
    if json_status(protocol) {
        assert_eq!(exit_code(error).unwrap(), code, "{protocol}: {text}");
        if code != 0 {
            let v: serde_json::Value = serde_json::from_slice(error).unwrap();
            assert_eq!(v["status"], "Failure", "{protocol}");
            assert_eq!(v["reason"], "NonZeroExitCode", "{protocol}");
            assert_eq!(
                v["details"]["causes"][0]["reason"], "ExitCode",
                "{protocol}"
            );
        }
    } else if code == 0 {
        assert!(error.is_empty(), "{protocol}: {text:?}");
    } else {
        assert_eq!(
            text,
            format!("command terminated with non-zero exit code: {code}"),
            "{protocol}"
        );
    }
}

#[tokio::test]
async fn exec_over_spdy_every_version() {
    let h = Harness::start(config()).await;
    for protocol in SPDY_VERSIONS {
        for code in [3, 0] {
            let code_arg = code.to_string();
            let url = h.exec(&["exit", &code_arg, "hi"], ALL);
            let cmd = spdy_command(&url, protocol, ALL).await.unwrap();
            assert_eq!(cmd.conn.protocol, protocol);
            let f = cmd.run(b"hello\nworld\n", DEADLINE).await.unwrap();
            assert_eq!(f.stdout, b"hi\nhello\nworld\n", "{protocol}");
            assert_eq!(
                f.stderr,
                format!("stderr of exit {code}\n").as_bytes(),
                "{protocol}"
            );
            assert_exit(protocol, &f.error, code);
        }
    }
    let calls = h.fake.calls();
    assert_eq!(calls.len(), 10);
    assert!(
        calls
            .iter()
            .all(|c| c.stdin && c.stdout && c.stderr && !c.resize),
        "{calls:?}"
    );
}

#[tokio::test]
async fn a_failure_is_an_internal_error_status_or_its_message() {
    let h = Harness::start(config()).await;
    let want = Want {
        stdout: true,
        ..Default::default()
    };
    let url = h.exec(&["fail", "boom"], want);
    let f = spdy_run(&url, "v4.channel.k8s.io", want, b"").await;
    let v: serde_json::Value = serde_json::from_slice(&f.error).unwrap();
    assert_eq!(v["status"], "Failure");
    assert_eq!(v["reason"], "InternalError");
    assert!(v["message"].as_str().unwrap().contains("boom"), "{v}");
    assert!(exit_code(&f.error).is_err());

    let url = h.exec(&["fail", "boom"], want);
    let f = spdy_run(&url, "v2.channel.k8s.io", want, b"").await;
    assert_eq!(f.error, b"boom");
}

#[tokio::test]
async fn a_client_that_offers_no_protocol_speaks_the_first_version() {
    let h = Harness::start(config()).await;
    let url = h.exec(&["exit", "2"], ALL);
    let (head, conn) = upgrade_request(
        &url,
        "POST",
        &[("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")],
    )
    .await
    .unwrap();
    assert_eq!(head.status, 101);
    assert_eq!(
        head.header("x-stream-protocol-version"),
        Some("channel.k8s.io")
    );
    let (session, _incoming) = Session::new(conn, Role::Client, SessionConfig::default());
    let conn = Spdy {
        session,
        protocol: "channel.k8s.io".into(),
    };
    let cmd = SpdyCommand {
        error: conn.open("error", &[]).await.unwrap(),
        stdin: Some(conn.open("stdin", &[]).await.unwrap()),
        stdout: Some(conn.open("stdout", &[]).await.unwrap()),
        stderr: Some(conn.open("stderr", &[]).await.unwrap()),
        resize: None,
        conn,
    };
    let f = cmd.run(b"in\n", DEADLINE).await.unwrap();
    assert_eq!(f.stdout, b"in\n");
    assert_exit("channel.k8s.io", &f.error, 2);
}

#[tokio::test]
async fn a_large_output_arrives_whole() {
    let h = Harness::start(config()).await;
    let want = Want {
        stdout: true,
        ..Default::default()
    };
    let url = h.exec(&["big", "4194304"], want);
    let f = spdy_run(&url, "v4.channel.k8s.io", want, b"").await;
    assert_eq!(f.stdout.len(), 4 << 20);
    assert!(f.stdout.iter().all(|b| *b == b'x'));
    assert_exit("v4.channel.k8s.io", &f.error, 0);
}

#[tokio::test]
async fn exec_over_websocket_every_version() {
    let h = Harness::start(config()).await;
    // v5: stdin reaches EOF through the close signal.
    let url = h.exec(&["exit", "3"], ALL);
    let mut ws = ws_connect(&url, &["v5.channel.k8s.io"]).await.unwrap();
    assert_eq!(ws.protocol, "v5.channel.k8s.io");
    ws.send(0, b"over websocket\n").await.unwrap();
    ws.send(255, &[0]).await.unwrap();
    let ch = ws.collect(DEADLINE).await.unwrap();
    assert_eq!(ch[1], b"over websocket\n");
    assert_eq!(ch[2], b"stderr of exit 3\n");
    assert_exit("v5.channel.k8s.io", &ch[3], 3);

    // Without the close signal stdin has no end: no stdin here.
    let want = Want {
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    for protocol in &SPDY_VERSIONS[1..] {
        for code in [4, 0] {
            let code_arg = code.to_string();
            let url = h.exec(&["exit", &code_arg, "out"], want);
            let mut ws = ws_connect(&url, &[protocol]).await.unwrap();
            assert_eq!(ws.protocol, *protocol);
            // The streams are ready: an empty message on the first output channel.
            assert_eq!(
                ws.recv().await.unwrap(),
                Some((1, Vec::new())),
                "{protocol}"
            );
            let ch = ws.collect(DEADLINE).await.unwrap();
            assert_eq!(ch[1], b"out\n", "{protocol}");
            assert_eq!(
                ch[2],
                format!("stderr of exit {code}\n").as_bytes(),
                "{protocol}"
            );
            assert_exit(protocol, &ch[3], code);
        }
    }

    // No subprotocol offered: the first version, and no protocol header back.
    let url = h.exec(&["exit", "5", "plain"], want);
    let mut ws = ws_connect(&url, &[]).await.unwrap();
    assert_eq!(ws.protocol, "");
    let ch = ws.collect(DEADLINE).await.unwrap();
    assert_eq!(ch[1], b"plain\n");
    assert_exit("channel.k8s.io", &ch[3], 5);
}

const TTY: Want = Want {
    stdin: true,
    stdout: true,
    stderr: true,
    tty: true,
};

fn size(width: u16, height: u16) -> crius_streaming::TermSize {
    crius_streaming::TermSize { width, height }
}

/// Waits until the fake has recorded exactly `want`.
async fn sizes_become(h: &Harness, want: Vec<crius_streaming::TermSize>) {
    eventually("the terminal sizes to arrive", || {
        let done = h.fake.sizes() == want;
        async move { done.then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn a_tty_over_spdy_gets_resizes_and_no_stderr() {
    let h = Harness::start(config()).await;
    let url = h.exec(&["exit", "0"], TTY);
    let cmd = spdy_command(&url, "v4.channel.k8s.io", TTY).await.unwrap();
    assert!(cmd.stderr.is_none());
    let (_, mut resize) = cmd.resize.unwrap().split();
    // Two sizes, the second one split across writes.
    resize
        .write_all(b"{\"Width\":100,\"Height\":40}\n{\"Width\":")
        .await
        .unwrap();
    sizes_become(&h, vec![size(100, 40)]).await;
    resize.write_all(b"120,\"Height\":50}\n").await.unwrap();
    sizes_become(&h, vec![size(100, 40), size(120, 50)]).await;
    let (_, mut stdin) = cmd.stdin.unwrap().split();
    let (stdout, _) = cmd.stdout.unwrap().split();
    stdin.write_all(b"typed\n").await.unwrap();
    stdin.shutdown().await.unwrap();
    let out = tokio::time::timeout(DEADLINE, read_all(stdout))
        .await
        .unwrap();
    assert_eq!(out, b"typed\n");
    let (error, _) = cmd.error.split();
    let status = tokio::time::timeout(DEADLINE, read_all(error))
        .await
        .unwrap();
    assert_eq!(exit_code(&status).unwrap(), 0);
    cmd.conn.session.close();
    let calls = h.fake.calls();
    assert_eq!(calls.len(), 1);
    assert!(calls[0].resize && !calls[0].stderr, "{calls:?}");
}

#[tokio::test]
async fn before_v3_a_tty_has_no_resize_stream() {
    let h = Harness::start(config()).await;
    let url = h.exec(&["exit", "0"], TTY);
    let f = spdy_run(&url, "v2.channel.k8s.io", TTY, b"x\n").await;
    assert_eq!(f.stdout, b"x\n");
    let calls = h.fake.calls();
    assert!(!calls[0].resize && !calls[0].stderr, "{calls:?}");
}

#[tokio::test]
async fn a_tty_over_websocket_gets_resizes() {
    let h = Harness::start(config()).await;
    let url = h.exec(&["exit", "0"], TTY);
    let mut ws = ws_connect(&url, &["v5.channel.k8s.io"]).await.unwrap();
    ws.send(4, b"{\"Width\":80,\"Height\":24}\n").await.unwrap();
    ws.send(4, b"{\"Width\":81,\"Height\":25}").await.unwrap();
    sizes_become(&h, vec![size(80, 24), size(81, 25)]).await;
    ws.send(0, b"tty input\n").await.unwrap();
    ws.send(255, &[0]).await.unwrap();
    let ch = ws.collect(DEADLINE).await.unwrap();
    assert_eq!(ch[1], b"tty input\n");
    assert!(ch[2].is_empty(), "a tty has no stderr");
    assert_exit("v5.channel.k8s.io", &ch[3], 0);
}

#[tokio::test]
async fn attach_over_spdy_and_websocket() {
    let h = Harness::start(config()).await;
    let url = h.attach(ALL);
    let f = spdy_run(&url, "v4.channel.k8s.io", ALL, b"to the container\n").await;
    assert_eq!(f.stdout, b"to the container\n");
    assert_eq!(f.stderr, b"attached to c1\n");
    assert_exit("v4.channel.k8s.io", &f.error, 0);

    let url = h.attach(ALL);
    let mut ws = ws_connect(&url, &["v5.channel.k8s.io"]).await.unwrap();
    ws.send(0, b"ws input\n").await.unwrap();
    ws.send(255, &[0]).await.unwrap();
    let ch = ws.collect(DEADLINE).await.unwrap();
    assert_eq!(ch[1], b"ws input\n");
    assert_eq!(ch[2], b"attached to c1\n");
    assert_exit("v5.channel.k8s.io", &ch[3], 0);

    // A tty attach: resizes arrive, no stderr.
    let url = h.attach(TTY);
    let cmd = spdy_command(&url, "v5.channel.k8s.io", TTY).await.unwrap();
    let (_, mut resize) = cmd.resize.unwrap().split();
    resize
        .write_all(b"{\"Width\":77,\"Height\":33}\n")
        .await
        .unwrap();
    sizes_become(&h, vec![size(77, 33)]).await;
    cmd.conn.session.close();
    let calls = h.fake.calls();
    assert_eq!(
        calls.iter().map(|c| c.what.as_str()).collect::<Vec<_>>(),
        ["attach c1"; 3]
    );
    assert!(calls[2].resize && !calls[2].stderr, "{calls:?}");
}

#[tokio::test]
async fn a_client_that_vanishes_stops_its_command() {
    let h = Harness::start(config()).await;
    let url = h.exec(&["wait"], ALL);
    let cmd = spdy_command(&url, "v4.channel.k8s.io", ALL).await.unwrap();
    h.fake.calls_reach(1).await;
    cmd.conn.session.close();
    drop(cmd);
    h.fake.gone_reaches(1).await;

    let url = h.exec(&["wait"], ALL);
    let ws = ws_connect(&url, &["v5.channel.k8s.io"]).await.unwrap();
    h.fake.calls_reach(2).await;
    drop(ws);
    h.fake.gone_reaches(2).await;
}

#[tokio::test]
async fn shutting_the_server_down_ends_its_streams() {
    let h = Harness::start(config()).await;
    let url = h.exec(&["wait"], ALL);
    let cmd = spdy_command(&url, "v4.channel.k8s.io", ALL).await.unwrap();
    h.fake.calls_reach(1).await;
    let next = h.exec(&["exit", "0"], ALL);
    h.stop.cancel();
    h.fake.gone_reaches(1).await;
    tokio::time::timeout(DEADLINE, cmd.conn.session.closed())
        .await
        .expect("the session outlived the server");
    // Nothing was written to the error stream.
    let (mut error, _) = cmd.error.split();
    let mut buf = Vec::new();
    let _ = error.read_to_end(&mut buf).await;
    assert!(buf.is_empty(), "{buf:?}");
    // And it takes no new connections.
    eventually("the listener to close", || {
        let next = next.clone();
        async move {
            let r = spdy_connect(&next, &["v4.channel.k8s.io"]).await;
            // Refused at connect, not answered by a server still running.
            r.err()
                .filter(|e| e.to_string().starts_with("connecting to"))
                .map(drop)
        }
    })
    .await;
}
