//! What the server does around the protocols: tokens, negotiation, timeouts, TLS,
//! and what `bind` and `url` refuse.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crius_cri_api::v1 as cri;
use crius_e2e::stream::*;
use crius_streaming::{Request, StreamError, StreamServer, StreamingConfig};

use crate::fake::*;

const STDOUT: Want = Want {
    stdin: false,
    stdout: true,
    stderr: false,
    tty: false,
};

/// The answer to an SPDY upgrade request for `url` offering `protocol`.
async fn spdy_head(url: &str, protocol: &str) -> Head {
    let headers = [
        ("Connection", "Upgrade"),
        ("Upgrade", "SPDY/3.1"),
        ("X-Stream-Protocol-Version", protocol),
    ];
    upgrade_request(url, "POST", &headers).await.unwrap().0
}

/// The status an SPDY upgrade request for `url` offering `v4.channel.k8s.io` gets.
async fn spdy_status(url: &str) -> u16 {
    spdy_head(url, "v4.channel.k8s.io").await.status
}

#[tokio::test]
async fn a_token_works_once_on_its_own_path_and_not_after_its_ttl() {
    let h = Harness::start(StreamingConfig {
        token_ttl_secs: 1,
        ..config()
    })
    .await;
    let url = h.exec(&["exit", "0"], STDOUT);
    let token = url.rsplit('/').next().unwrap().to_string();
    assert_eq!(token.len(), 40, "{url}");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let f = spdy_run(&url, "v4.channel.k8s.io", STDOUT, b"").await;
    assert_eq!(f.exit_code().unwrap(), 0);
    // Used.
    assert_eq!(spdy_status(&url).await, 404);
    // Unknown.
    let base = url.rsplitn(3, '/').nth(2).unwrap().to_string();
    assert_eq!(
        spdy_status(&format!("{base}/exec/{}", "00".repeat(20))).await,
        404
    );
    assert_eq!(spdy_status(&format!("{base}/exec")).await, 404);
    assert_eq!(spdy_status(&format!("{base}/logs/{token}")).await, 404);
    // On another kind's path: refused, and spent.
    let url = h.exec(&["exit", "0"], STDOUT);
    assert_eq!(spdy_status(&url.replace("/exec/", "/attach/")).await, 404);
    assert_eq!(spdy_status(&url).await, 404);
    // Without an upgrade: 400, and spent too.
    let url = h.exec(&["exit", "0"], STDOUT);
    let (head, _) = upgrade_request(&url, "GET", &[]).await.unwrap();
    assert_eq!(head.status, 400);
    assert!(head.body.contains("SPDY/3.1"), "{}", head.body);
    assert_eq!(spdy_status(&url).await, 404);
    // Expired: made, then not used within the TTL.
    let url = h.exec(&["exit", "0"], STDOUT);
    let made = Instant::now();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(made.elapsed() > Duration::from_secs(1));
    assert_eq!(spdy_status(&url).await, 404);
    // None of them reached the backend.
    assert_eq!(h.fake.calls().len(), 1);
}

#[tokio::test]
async fn waiting_requests_are_bounded() {
    let h = Harness::start(config()).await;
    let req = || {
        Request::Exec(cri::ExecRequest {
            container_id: "c1".into(),
            cmd: vec!["exit".into(), "0".into()],
            stdout: true,
            ..Default::default()
        })
    };
    let mut urls = Vec::new();
    for _ in 0..1000 {
        urls.push(h.server.url(req()).unwrap());
    }
    let err = h.server.url(req()).unwrap_err();
    assert!(
        matches!(err, StreamError::TooManyPending { max: 1000 }),
        "{err:?}"
    );
    // A request that connects makes room for one more.
    let f = spdy_run(&urls[0], "v4.channel.k8s.io", STDOUT, b"").await;
    assert_eq!(f.exit_code().unwrap(), 0);
    h.server.url(req()).unwrap();
    assert!(matches!(
        h.server.url(req()),
        Err(StreamError::TooManyPending { .. })
    ));
}

#[tokio::test]
async fn no_protocol_in_common_is_refused_with_the_servers_list() {
    let h = Harness::start(config()).await;
    let url = h.exec(&["exit", "0"], STDOUT);
    let head = spdy_head(&url, "v9.channel.k8s.io").await;
    assert_eq!(head.status, 403);
    assert_eq!(
        head.header("x-accepted-stream-protocol-versions"),
        Some(
            "v5.channel.k8s.io, v4.channel.k8s.io, v3.channel.k8s.io, v2.channel.k8s.io, channel.k8s.io"
        )
    );
    assert!(head.body.contains("v9.channel.k8s.io"), "{}", head.body);

    let url = h.port_forward(&[80]);
    let head = spdy_head(&url, "v4.channel.k8s.io").await;
    assert_eq!(head.status, 403);
    assert_eq!(
        head.header("x-accepted-stream-protocol-versions"),
        Some("portforward.k8s.io")
    );

    // WebSocket: 400, naming what the server speaks.
    let url = h.exec(&["exit", "0"], STDOUT);
    let (head, _) = upgrade_request(
        &url,
        "GET",
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Protocol", "v9.channel.k8s.io"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(head.status, 400);
    assert!(head.body.contains("v5.channel.k8s.io"), "{}", head.body);
    let url = h.exec(&["exit", "0"], STDOUT);
    assert!(ws_connect(&url, &["v9.channel.k8s.io"]).await.is_err());
    assert!(h.fake.calls().is_empty());
}

#[tokio::test]
async fn streams_not_opened_in_time_end_the_connection() {
    let h = Harness::start(StreamingConfig {
        stream_creation_timeout_secs: 1,
        ..config()
    })
    .await;
    let url = h.exec(&["exit", "0"], ALL);
    let start = Instant::now();
    let conn = spdy_connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
    // Only the error stream of the four asked for.
    let _error = conn.open("error", &[]).await.unwrap();
    tokio::time::timeout(DEADLINE, conn.session.closed())
        .await
        .expect("the session was not closed");
    assert!(start.elapsed() >= Duration::from_secs(1));
    assert!(h.fake.calls().is_empty(), "the command ran");
}

#[tokio::test]
async fn an_idle_stream_is_closed() {
    let h = Harness::start(StreamingConfig {
        idle_timeout_secs: 1,
        ..config()
    })
    .await;
    let url = h.exec(&["wait"], ALL);
    let start = Instant::now();
    let cmd = spdy_command(&url, "v4.channel.k8s.io", ALL).await.unwrap();
    tokio::time::timeout(DEADLINE, cmd.conn.session.closed())
        .await
        .expect("the idle session was not closed");
    assert!(start.elapsed() >= Duration::from_secs(1));
    h.fake.gone_reaches(1).await;

    // Traffic keeps a stream open past the limit.
    let url = h.exec(&["exit", "0"], ALL);
    let cmd = spdy_command(&url, "v4.channel.k8s.io", ALL).await.unwrap();
    let (_, mut stdin) = cmd.stdin.unwrap().split();
    let (mut stdout, _) = cmd.stdout.unwrap().split();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2500) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stdin.write_all(b"tick\n").await.unwrap();
        let mut buf = [0u8; 5];
        tokio::time::timeout(DEADLINE, stdout.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf, b"tick\n");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!cmd.conn.session.is_closed());
}

/// A CA and a certificate for 127.0.0.1 it signed, made with openssl, in `dir`:
/// the CA file, the certificate and its key.
fn make_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("these tests need openssl (Debian: apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    #[rustfmt::skip]
    run(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        "-subj", "/CN=crius test CA", "-keyout", "ca.key", "-out", "ca.pem"]);
    #[rustfmt::skip]
    run(&["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "srv.key", "-out", "srv.csr"]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    #[rustfmt::skip]
    run(&["x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "1", "-extfile", "ext.cnf", "-out", "srv.pem"]);
    (dir.join("ca.pem"), dir.join("srv.pem"), dir.join("srv.key"))
}

fn tls_config(cert: &Path, key: &Path) -> StreamingConfig {
    StreamingConfig {
        tls_cert_file: cert.to_path_buf(),
        tls_key_file: key.to_path_buf(),
        ..config()
    }
}

#[tokio::test]
async fn tls_serves_spdy_and_websocket() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(dir.path());
    trust_ca(&ca);
    let h = Harness::start(tls_config(&cert, &key)).await;
    let url = h.exec(&["exit", "7"], ALL);
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let f = spdy_run(&url, "v4.channel.k8s.io", ALL, b"secret\n").await;
    assert_eq!(f.stdout, b"secret\n");
    assert_eq!(f.exit_code().unwrap(), 7);

    let url = h.exec(&["exit", "0", "wss"], STDOUT);
    let mut ws = ws_connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
    let ch = ws.collect(DEADLINE).await.unwrap();
    assert_eq!(ch[1], b"wss\n");
    assert_eq!(exit_code(&ch[3]).unwrap(), 0);

    // Plain HTTP to the TLS port gets no stream.
    let url = h.exec(&["exit", "0"], STDOUT);
    let plain = url.replacen("https://", "http://", 1);
    assert!(
        spdy_command(&plain, "v4.channel.k8s.io", STDOUT)
            .await
            .is_err()
    );
    assert_eq!(h.fake.calls().len(), 2);
}

/// `bind`'s error for `cfg`.
async fn bind_error(cfg: &StreamingConfig) -> StreamError {
    match StreamServer::bind(cfg).await {
        Ok(_) => panic!("bind succeeded with {cfg:?}"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn bad_tls_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cert, key) = make_certs(dir.path());
    let missing = dir.path().join("missing.pem");
    match bind_error(&tls_config(&missing, &key)).await {
        StreamError::TlsCert { path, source } => {
            assert_eq!(path, missing);
            assert!(std::error::Error::source(&StreamError::TlsCert { path, source }).is_some());
        }
        e => panic!("{e:?}"),
    }
    // A file with no PEM certificate in it.
    let text = dir.path().join("ext.cnf");
    match bind_error(&tls_config(&text, &key)).await {
        StreamError::NoCertificate { path } => assert_eq!(path, text),
        e => panic!("{e:?}"),
    }
    match bind_error(&tls_config(&cert, &missing)).await {
        StreamError::TlsKey { path, .. } => assert_eq!(path, missing),
        e => panic!("{e:?}"),
    }
    // The CA's key does not go with the server's certificate.
    let e = bind_error(&tls_config(&cert, &dir.path().join("ca.key"))).await;
    assert!(matches!(e, StreamError::Tls { .. }), "{e:?}");
    assert!(e.to_string().contains("do not go together"), "{e}");
}

#[tokio::test]
async fn bind_failures_name_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    match bind_error(&StreamingConfig { port, ..config() }).await {
        StreamError::Bind { addr, source } => {
            assert_eq!(addr.port(), port);
            assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
        }
        e => panic!("{e:?}"),
    }
    match bind_error(&StreamingConfig {
        address: "localhost".into(),
        ..config()
    })
    .await
    {
        StreamError::Config(e) => assert_eq!(e.key, "streaming.address"),
        e => panic!("{e:?}"),
    }
}

#[tokio::test]
async fn an_unspecified_address_gives_loopback_urls() {
    let h = Harness::start(StreamingConfig {
        address: "0.0.0.0".into(),
        ..config()
    })
    .await;
    let url = h.exec(&["exit", "0", "any"], STDOUT);
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let f = spdy_run(&url, "v4.channel.k8s.io", STDOUT, b"").await;
    assert_eq!(f.stdout, b"any\n");
}
