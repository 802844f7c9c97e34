//! Exec, Attach and PortForward through crius's streaming server, driven by
//! the suite's own SPDY/3.1 and WebSocket clients against real containers.
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crius_e2e::stream::*;
use crius_e2e::v1 as cri;
use crius_e2e::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

async fn exec_url(f: &mut Fixture, id: &str, cmd: &[&str], want: Want) -> String {
    f.d.rt
        .exec(cri::ExecRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty: want.tty,
            stdin: want.stdin,
            stdout: want.stdout,
            stderr: want.stderr,
        })
        .await
        .unwrap()
        .into_inner()
        .url
}

async fn attach_url(f: &mut Fixture, id: &str, want: Want) -> String {
    f.d.rt
        .attach(cri::AttachRequest {
            container_id: id.into(),
            tty: want.tty,
            stdin: want.stdin,
            stdout: want.stdout,
            stderr: want.stderr,
        })
        .await
        .unwrap()
        .into_inner()
        .url
}

async fn port_forward_url(f: &mut Fixture, pod: &str) -> String {
    f.d.rt
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: pod.into(),
            port: vec![],
        })
        .await
        .unwrap()
        .into_inner()
        .url
}

/// No exec FIFOs, no exec process left in the shim.
async fn assert_no_sessions(f: &Fixture) {
    let dir = f.d.run_dir().join("streams");
    eventually(DEADLINE, "stream FIFO directories to go", || {
        let dir = dir.clone();
        async move {
            let n = std::fs::read_dir(&dir).map(|r| r.count()).unwrap_or(0);
            (n == 0).then_some(())
        }
    })
    .await;
}

/// A daemon started with `opts`, a busybox pod, and a container sleeping in it to
/// exec into; returns the fixture, the image, the pod and the container.
async fn with_sleeper(tag: &str, opts: Options) -> (Fixture, String, String, String) {
    let (mut f, image, pod) = Fixture::with_busybox_pod(tag, opts).await;
    let id = f.run(&pod, sh("sleeper", &image, "sleep 1000")).await;
    (f, image, pod, id)
}

/// A container running `/bin/sh -c <script>`.
fn sh(name: &str, image: &str, script: &str) -> ContainerBuilder {
    ContainerBuilder::new(name, image).sh(script)
}

/// Processes whose command line contains `needle`.
fn procs_with(needle: &str) -> usize {
    processes_mentioning(needle).len()
}

const ALL: Want = Want {
    stdin: true,
    stdout: true,
    stderr: true,
    tty: false,
};

/// Stdout only.
const OUT: Want = Want {
    stdin: false,
    stdout: true,
    stderr: false,
    tty: false,
};

/// Stdout and stderr.
const OUT_ERR: Want = Want {
    stdin: false,
    stdout: true,
    stderr: true,
    tty: false,
};

/// Runs a remote command over SPDY at `url` with `input` as its stdin; its outcome.
async fn spdy_run(url: &str, protocol: &str, want: Want, input: &[u8]) -> Finished {
    spdy_command(url, protocol, want)
        .await
        .unwrap()
        .run(input, DEADLINE)
        .await
        .unwrap()
}

/// The lines of CRI log records, in order.
fn log_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3).map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exec_over_spdy_every_version() {
    let (mut f, _, _, id) = with_sleeper("st-exec", Options::default()).await;

    // v4: stdin echoed, stderr apart, exit code 3 as NonZeroExitCode.
    let url = exec_url(
        &mut f,
        &id,
        &["sh", "-c", "cat; echo oops >&2; exit 3"],
        ALL,
    )
    .await;
    let cmd = spdy_command(&url, "v4.channel.k8s.io", ALL).await.unwrap();
    assert_eq!(cmd.conn.protocol, "v4.channel.k8s.io");
    let done = cmd.run(b"hello\nworld\n", DEADLINE).await.unwrap();
    assert_eq!(done.stdout, b"hello\nworld\n");
    assert_eq!(done.stderr, b"oops\n");
    assert_eq!(done.exit_code().unwrap(), 3);

    // v5 over SPDY is v4; success is a Success status.
    let want = OUT;
    let url = exec_url(&mut f, &id, &["sh", "-c", "id -u; exit 0"], want).await;
    let done = spdy_run(&url, "v5.channel.k8s.io", want, b"").await;
    assert_eq!(done.stdout, b"1000\n");
    assert_eq!(done.exit_code().unwrap(), 0);

    // v2 and v1 carry a plain-text error, and nothing on success.
    for proto in ["v2.channel.k8s.io", "channel.k8s.io"] {
        let want = OUT_ERR;
        let url = exec_url(&mut f, &id, &["sh", "-c", "echo v; exit 4"], want).await;
        let done = spdy_run(&url, proto, want, b"").await;
        assert_eq!(done.stdout, b"v\n", "{proto}");
        let msg = String::from_utf8_lossy(&done.error).to_string();
        assert!(msg.contains("exit code: 4"), "{proto}: {msg:?}");
    }

    // A large output arrives whole (no stall at SPDY's 64 KiB window).
    let want = OUT;
    let url = exec_url(
        &mut f,
        &id,
        &["sh", "-c", "dd if=/dev/zero bs=1024 count=4096 2>/dev/null"],
        want,
    )
    .await;
    let done = spdy_run(&url, "v4.channel.k8s.io", want, b"").await;
    assert_eq!(done.stdout.len(), 4 << 20);

    assert_no_sessions(&f).await;
    f.finish().await;
}

/// Writes `question` to `stdin` until `answer` shows in `stdout` (within DEADLINE).
async fn ask_until(
    stdin: &mut (impl tokio::io::AsyncWrite + Unpin),
    stdout: &mut (impl tokio::io::AsyncRead + Unpin),
    question: &[u8],
    answer: &str,
) {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !String::from_utf8_lossy(&seen).contains(answer) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{answer:?} never came: {:?}",
            String::from_utf8_lossy(&seen)
        );
        stdin.write_all(question).await.unwrap();
        let mut buf = [0u8; 4096];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(300), stdout.read(&mut buf)).await
        {
            seen.extend_from_slice(&buf[..n]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exec_with_a_tty_sees_resizes() {
    let (mut f, image, pod, id) = with_sleeper("st-tty", Options::default()).await;
    let want = Want {
        stdin: true,
        stdout: true,
        stderr: false,
        tty: true,
    };
    let url = exec_url(&mut f, &id, &["sh"], want).await;
    let cmd = spdy_command(&url, "v4.channel.k8s.io", want).await.unwrap();
    let (_, mut resize) = cmd.resize.unwrap().split();
    resize
        .write_all(b"{\"Width\":100,\"Height\":40}\n")
        .await
        .unwrap();
    let (_, mut stdin) = cmd.stdin.unwrap().split();
    let (mut stdout, _) = cmd.stdout.unwrap().split();
    // The resize travels apart from the input: ask until the shell sees it.
    ask_until(&mut stdin, &mut stdout, b"stty size\n", "40 100").await;
    // A second size.
    resize
        .write_all(b"{\"Width\":120,\"Height\":50}\n")
        .await
        .unwrap();
    ask_until(&mut stdin, &mut stdout, b"stty size\n", "50 120").await;
    stdin.write_all(b"exit 5\n").await.unwrap();
    read_all(stdout).await;
    let (error, _) = cmd.error.split();
    let status = read_all(error).await;
    assert_eq!(exit_code(&status).unwrap(), 5);
    cmd.conn.session.close();

    // Attach to a tty container: raw terminal output, and a resize reaches its pty.
    let tty = sh("tty", &image, "while true; do stty size; sleep 0.2; done").tty();
    let id = f.run(&pod, tty).await;
    let want = Want {
        stdout: true,
        tty: true,
        ..Default::default()
    };
    let url = attach_url(&mut f, &id, want).await;
    let a = spdy_command(&url, "v4.channel.k8s.io", want).await.unwrap();
    let (_, mut resize) = a.resize.unwrap().split();
    let (mut out, _) = a.stdout.unwrap().split();
    resize
        .write_all(b"{\"Width\":77,\"Height\":33}\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("33 77\r\n") {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(DEADLINE, out.read(&mut buf))
            .await
            .expect("the resize never showed in the attached output")
            .unwrap();
        assert!(n > 0, "attach ended early");
        seen.extend_from_slice(&buf[..n]);
    }
    a.conn.session.close();
    assert_no_sessions(&f).await;
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exec_over_websocket_v5_and_v4() {
    let (mut f, _, _, id) = with_sleeper("st-ws", Options::default()).await;

    // v5: stdin ends with the close signal; cat then exits 0.
    let url = exec_url(&mut f, &id, &["sh", "-c", "cat; echo done >&2"], ALL).await;
    let mut ws = ws_connect(&url, &["v5.channel.k8s.io", "v4.channel.k8s.io"])
        .await
        .unwrap();
    assert_eq!(ws.protocol, "v5.channel.k8s.io");
    ws.send(0, b"over websocket\n").await.unwrap();
    ws.send(255, &[0]).await.unwrap();
    let ch = ws.collect(DEADLINE).await.unwrap();
    assert_eq!(ch[1], b"over websocket\n");
    assert_eq!(ch[2], b"done\n");
    assert_eq!(exit_code(&ch[3]).unwrap(), 0);

    // v4: exit code 3, stdout and stderr apart.
    let want = OUT_ERR;
    let url = exec_url(
        &mut f,
        &id,
        &["sh", "-c", "echo out; echo err >&2; exit 3"],
        want,
    )
    .await;
    let mut ws = ws_connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
    let ch = ws.collect(DEADLINE).await.unwrap();
    assert_eq!(ch[1], b"out\n");
    assert_eq!(ch[2], b"err\n");
    assert_eq!(exit_code(&ch[3]).unwrap(), 3);

    // An unknown subprotocol is refused.
    let url = exec_url(&mut f, &id, &["true"], want).await;
    assert!(ws_connect(&url, &["v9.channel.k8s.io"]).await.is_err());

    assert_no_sessions(&f).await;
    f.finish().await;
}

/// Consecutive `line-N` numbers in `text`; panics on a gap.
fn counter_run(text: &str) -> Vec<u64> {
    let nums: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("line-"))
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    for w in nums.windows(2) {
        assert_eq!(w[1], w[0] + 1, "a gap in {nums:?}");
    }
    nums
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attach_two_attachers_and_the_log_keeps_every_line() {
    let (mut f, image, pod) = Fixture::with_busybox_pod("st-attach", Options::default()).await;
    let counter = sh(
        "counter",
        &image,
        "i=0; while [ $i -lt 100000 ]; do echo line-$i; i=$((i+1)); sleep 0.02; done",
    );
    let id = f.run(&pod, counter).await;
    let want = OUT_ERR;
    // One attacher over SPDY, one over WebSocket.
    let url = attach_url(&mut f, &id, want).await;
    let a = spdy_command(&url, "v4.channel.k8s.io", want).await.unwrap();
    let (mut a_out, _) = a.stdout.unwrap().split();
    let url = attach_url(&mut f, &id, want).await;
    let mut b = ws_connect(&url, &["v5.channel.k8s.io"]).await.unwrap();

    let mut a_seen = String::new();
    let mut b_seen = String::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while counter_run(&a_seen).len() < 30 || counter_run(&b_seen).len() < 30 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "attachers saw too little"
        );
        let mut buf = [0u8; 4096];
        tokio::select! {
            r = a_out.read(&mut buf) => {
                let n = r.unwrap();
                assert!(n > 0, "attach stdout ended early");
                a_seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            m = b.recv() => {
                let (ch, data) = m.unwrap().expect("websocket attach ended early");
                if ch == 1 {
                    b_seen.push_str(&String::from_utf8_lossy(&data));
                }
            }
        }
    }
    // The SPDY attacher leaves; the other goes on.
    a.conn.session.close();
    drop(a_out);
    let before = counter_run(&b_seen).len();
    while counter_run(&b_seen).len() < before + 20 {
        let (ch, data) = tokio::time::timeout(DEADLINE, b.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if ch == 1 {
            b_seen.push_str(&String::from_utf8_lossy(&data));
        }
    }
    // Stop the container: the remaining attacher's streams end with Success.
    f.d.rt
        .stop_container(cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        })
        .await
        .unwrap();
    let ch = b.collect(DEADLINE).await.unwrap();
    b_seen.push_str(&String::from_utf8_lossy(&ch[1]));
    assert_eq!(exit_code(&ch[3]).unwrap(), 0);

    // The log has every line from 0, including all the attachers saw.
    let log = log_lines(&f.log_of("counter")).join("\n");
    let logged = counter_run(&log);
    assert_eq!(logged.first(), Some(&0));
    let b_nums = counter_run(&b_seen);
    let a_nums = counter_run(&a_seen);
    for n in a_nums.iter().chain(b_nums.iter()) {
        assert!(logged.contains(n), "line-{n} missing from the log");
    }
    assert_no_sessions(&f).await;
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attach_stdin_survives_attachers_and_stdin_once_closes_it() {
    let (mut f, image, pod) = Fixture::with_busybox_pod("st-stdin", Options::default()).await;
    let script =
        "while read l; do echo got-$l; [ \"$l\" = quit ] && exit 0; done; echo stdin-closed";
    // stdin kept open across attachers.
    let id = f.run(&pod, sh("reader", &image, script).stdin()).await;
    let only_in = Want {
        stdin: true,
        ..Default::default()
    };
    let url = attach_url(&mut f, &id, only_in).await;
    let a = spdy_command(&url, "v4.channel.k8s.io", only_in)
        .await
        .unwrap();
    let done = a.run(b"one\n", DEADLINE).await.unwrap();
    assert_eq!(done.exit_code().unwrap(), 0);
    let both = Want {
        stdin: true,
        stdout: true,
        ..Default::default()
    };
    let url = attach_url(&mut f, &id, both).await;
    let b = spdy_command(&url, "v4.channel.k8s.io", both).await.unwrap();
    let done = b.run(b"two\nquit\n", DEADLINE).await.unwrap();
    // The second attacher sees what came after it attached; the log has all of it.
    assert!(String::from_utf8_lossy(&done.stdout).contains("got-two"));
    let log = log_lines(&f.log_of("reader"));
    assert_eq!(log, vec!["got-one", "got-two", "got-quit"]);

    // stdin_once: the end of the first attacher's input is the container's EOF; the
    // same for a container without a log path (the shim tees it all the same).
    for (name, log_path) in [("once", "once.log"), ("nolog", "")] {
        let cfg = sh(name, &image, script).stdin_once().log_path(log_path);
        let id = f.run(&pod, cfg).await;
        let url = attach_url(&mut f, &id, both).await;
        let done = spdy_run(&url, "v4.channel.k8s.io", both, b"x\n").await;
        let out = String::from_utf8_lossy(&done.stdout).to_string();
        assert!(
            out.contains("got-x") && out.contains("stdin-closed"),
            "{name}: {out:?}"
        );
    }
    assert_no_sessions(&f).await;
    f.finish().await;
}

/// One HTTP GET through a port-forward data stream; returns the response.
async fn http_get(mut s: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin) -> String {
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).to_string()
}

/// A port-forward connection over `conn`: the error and data streams of one request.
async fn forward(
    conn: &Spdy,
    port: u16,
    request: u32,
) -> (
    crius_spdy::session::Stream,
    crius_spdy::session::StreamReader,
) {
    let port = port.to_string();
    let req = request.to_string();
    let err = conn
        .open("error", &[("port", &port), ("requestID", &req)])
        .await
        .unwrap();
    let (err_r, mut err_w) = err.split();
    err_w.shutdown().await.unwrap();
    let data = conn
        .open("data", &[("port", &port), ("requestID", &req)])
        .await
        .unwrap();
    (data, err_r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn port_forward_twenty_connections_to_httpd() {
    let (mut f, image, pod) = Fixture::with_busybox_pod("st-pf", Options::default()).await;
    f.run(&pod, sh(
        "web",
        &image,
        "mkdir -p /tmp/www && echo hello-from-pod > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www",
    ))
    .await;
    let url = port_forward_url(&mut f, &pod).await;
    let conn = spdy_connect(&url, &["portforward.k8s.io"]).await.unwrap();
    assert_eq!(conn.protocol, "portforward.k8s.io");
    // Until httpd listens.
    let mut req = 0u32;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        req += 1;
        let (data, _) = forward(&conn, 8080, req).await;
        if http_get(data).await.contains("hello-from-pod") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "httpd never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // 20 at once over the one connection.
    let mut tasks = Vec::new();
    for i in 0..20u32 {
        let (data, err) = forward(&conn, 8080, 1000 + i).await;
        tasks.push(tokio::spawn(async move {
            let body = http_get(data).await;
            let err = read_all(err).await;
            (body, err)
        }));
    }
    for t in tasks {
        let (body, err) = t.await.unwrap();
        assert!(
            body.starts_with("HTTP/1.") && body.contains("hello-from-pod"),
            "{body:?}"
        );
        assert!(err.is_empty(), "{:?}", String::from_utf8_lossy(&err));
    }
    // A port nobody listens on: the error stream says so.
    let (data, err) = forward(&conn, 9, 5000).await;
    drop(data);
    let msg = String::from_utf8_lossy(&read_all(err).await).to_string();
    assert!(msg.contains("port 9"), "{msg:?}");
    conn.session.close();

    // The same over WebSocket: channel 0 data, 1 errors, each opened by the port number.
    let url = port_forward_url(&mut f, &pod).await;
    let mut ws = ws_connect(&format!("{url}?ports=8080"), &["v4.channel.k8s.io"])
        .await
        .unwrap();
    let mut opened = 0;
    while opened < 2 {
        let (ch, data) = ws.recv().await.unwrap().unwrap();
        assert!(ch <= 1);
        assert_eq!(data, 8080u16.to_le_bytes());
        opened += 1;
    }
    ws.send(0, b"GET /index.html HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let ch = ws.collect(DEADLINE).await.unwrap();
    assert!(String::from_utf8_lossy(&ch[0]).contains("hello-from-pod"));
    assert!(ch[1].is_empty());
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_are_single_use_and_expire_and_bad_requests_are_named() {
    let (mut f, _, pod, id) = with_sleeper(
        "st-token",
        Options::config("[streaming]\ntoken_ttl_secs = 1\n"),
    )
    .await;
    let want = OUT;
    let url = exec_url(&mut f, &id, &["true"], want).await;
    // The token is 160 random bits.
    let token = url.rsplit('/').next().unwrap();
    assert!(token.len() >= 32, "{token}");
    let done = spdy_run(&url, "v4.channel.k8s.io", want, b"").await;
    assert_eq!(done.exit_code().unwrap(), 0);
    // Used: 404, no stream.
    let (head, _) = upgrade_request(
        &url,
        "POST",
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(head.status, 404);
    // Expired: 404 after the TTL.
    let url = exec_url(&mut f, &id, &["true"], want).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let err = spdy_command(&url, "v4.channel.k8s.io", want)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("404"), "{err}");
    // Unknown, and a token used on the wrong path.
    let bogus = format!(
        "{}/exec/{}",
        url.rsplitn(3, '/').nth(2).unwrap(),
        "00".repeat(20)
    );
    assert!(
        spdy_command(&bogus, "v4.channel.k8s.io", want)
            .await
            .is_err()
    );
    let url = exec_url(&mut f, &id, &["true"], want).await;
    let wrong = url.replace("/exec/", "/attach/");
    let err = spdy_command(&wrong, "v4.channel.k8s.io", want)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("404"), "{err}");
    // No protocol in common: 403 and the server's list.
    let url = exec_url(&mut f, &id, &["true"], want).await;
    let err = spdy_connect(&url, &["v9.channel.k8s.io"])
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("403"), "{err}");

    // Bad requests are InvalidArgument naming the field; unknown ids NotFound.
    let bad =
        |cmd: Vec<String>, tty: bool, stdin: bool, stdout: bool, stderr: bool| cri::ExecRequest {
            container_id: id.clone(),
            cmd,
            tty,
            stdin,
            stdout,
            stderr,
        };
    let cases = [
        (bad(vec![], false, false, true, false), "cmd"),
        (
            bad(vec!["true".into()], false, false, false, false),
            "stdin",
        ),
        (bad(vec!["true".into()], true, false, true, true), "stderr"),
    ];
    for (req, field) in cases {
        let err = f.d.rt.exec(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().starts_with(field), "{}", err.message());
    }
    let err =
        f.d.rt
            .exec(cri::ExecRequest {
                container_id: "nope".into(),
                cmd: vec!["true".into()],
                stdout: true,
                ..Default::default()
            })
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err =
        f.d.rt
            .port_forward(cri::PortForwardRequest {
                pod_sandbox_id: pod.clone(),
                port: vec![70000],
            })
            .await
            .unwrap_err();
    assert_refused(&err, Code::InvalidArgument, "port[0]");
    assert_no_sessions(&f).await;
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_vanished_or_idle_client_leaves_nothing_behind() {
    let (mut f, _, _, id) = with_sleeper(
        "st-gone",
        Options::config("[streaming]\nidle_timeout_secs = 2\n"),
    )
    .await;
    // The client vanishes mid-stream: its process is killed, its FIFOs removed.
    let url = exec_url(&mut f, &id, &["sleep", "7371"], ALL).await;
    let cmd = spdy_command(&url, "v4.channel.k8s.io", ALL).await.unwrap();
    eventually(DEADLINE, "the exec to run", || async {
        (procs_with("sleep 7371") == 1).then_some(())
    })
    .await;
    cmd.conn.session.close();
    drop(cmd);
    eventually(DEADLINE, "the exec'd process to be killed", || async {
        (procs_with("sleep 7371") == 0).then_some(())
    })
    .await;
    assert_no_sessions(&f).await;

    // A WebSocket client vanishing does the same.
    let url = exec_url(&mut f, &id, &["sleep", "7373"], ALL).await;
    let ws = ws_connect(&url, &["v5.channel.k8s.io"]).await.unwrap();
    eventually(DEADLINE, "the exec to run", || async {
        (procs_with("sleep 7373") == 1).then_some(())
    })
    .await;
    drop(ws);
    eventually(DEADLINE, "the exec'd process to be killed", || async {
        (procs_with("sleep 7373") == 0).then_some(())
    })
    .await;

    // criusd dies mid-exec: the restarted daemon kills the orphaned process.
    let url = exec_url(&mut f, &id, &["sleep", "7374"], ALL).await;
    let cmd = spdy_command(&url, "v4.channel.k8s.io", ALL).await.unwrap();
    eventually(DEADLINE, "the exec to run", || async {
        (procs_with("sleep 7374") == 1).then_some(())
    })
    .await;
    f.d.crash_and_restart().await;
    drop(cmd);
    eventually(DEADLINE, "the orphaned exec to be killed", || async {
        (procs_with("sleep 7374") == 0).then_some(())
    })
    .await;
    // Killed by the restarted daemon's recovery, which says so once it deleted it.
    let log = f.d.log_path.clone();
    eventually(DEADLINE, "the recovery to log the orphaned exec", || {
        let log = log.clone();
        async move {
            std::fs::read_to_string(&log)
                .ok()?
                .contains("killed a streaming exec")
                .then_some(())
        }
    })
    .await;
    assert_no_sessions(&f).await;

    // Nothing moves for idle_timeout_secs: the server closes, the process goes.
    let url = exec_url(&mut f, &id, &["sleep", "7372"], ALL).await;
    let cmd = spdy_command(&url, "v4.channel.k8s.io", ALL).await.unwrap();
    tokio::time::timeout(DEADLINE, cmd.conn.session.closed())
        .await
        .expect("the idle stream was not closed");
    eventually(DEADLINE, "the idle exec's process to be killed", || async {
        (procs_with("sleep 7372") == 0).then_some(())
    })
    .await;
    assert_no_sessions(&f).await;
    f.finish().await;
}

/// A CA and a certificate for 127.0.0.1 it signed, made with openssl; returns the
/// CA file, the certificate and the key.
fn make_certs(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    assert!(
        std::path::Path::new("/usr/bin/openssl").exists(),
        "install Debian's openssl"
    );
    std::fs::create_dir_all(dir).unwrap();
    let p = |n: &str| dir.join(n).display().to_string();
    let run = |args: &[&str]| {
        run_cmd("openssl", args).unwrap();
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=crius test CA",
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.pem"),
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &p("srv.key"),
        "-out",
        &p("srv.csr"),
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        &p("srv.csr"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &p("ext.cnf"),
        "-out",
        &p("srv.pem"),
    ]);
    (dir.join("ca.pem"), dir.join("srv.pem"), dir.join("srv.key"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exec_over_tls_spdy_and_websocket() {
    // Certificates under a directory of this test's own, outside the daemon root.
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(certs.path());
    let tls = Options::config(format!(
        "[streaming]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        cert.display(),
        key.display()
    ));
    let (mut f, image, pod) = Fixture::with_busybox_pod("st-tls", tls).await;
    trust_ca(&ca);
    let id = f.run(&pod, sh("sleeper", &image, "sleep 1000")).await;
    let url = exec_url(&mut f, &id, &["sh", "-c", "cat; exit 7"], ALL).await;
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let done = spdy_run(&url, "v4.channel.k8s.io", ALL, b"secret\n").await;
    assert_eq!(done.stdout, b"secret\n");
    assert_eq!(done.exit_code().unwrap(), 7);
    // WebSocket over TLS too.
    let want = OUT;
    let url = exec_url(&mut f, &id, &["echo", "wss"], want).await;
    let mut ws = ws_connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
    let ch = ws.collect(DEADLINE).await.unwrap();
    assert_eq!(ch[1], b"wss\n");
    // Plain HTTP to the TLS port gets no stream.
    let url = exec_url(&mut f, &id, &["true"], want).await;
    let plain = url.replacen("https://", "http://", 1);
    assert!(
        spdy_command(&plain, "v4.channel.k8s.io", want)
            .await
            .is_err()
    );
    assert_no_sessions(&f).await;
    f.finish().await;
}
