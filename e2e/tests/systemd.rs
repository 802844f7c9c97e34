//! criusd under a service manager: the notifications a `Type=notify` unit relies on,
//! received on a datagram socket the test owns (PID 1 here is not systemd).

use std::os::unix::net::UnixDatagram;
use std::time::Instant;

use crius_e2e::*;

/// The next notification, or a panic naming what was awaited.
fn next(sock: &UnixDatagram, waiting_for: &str) -> String {
    let mut buf = [0u8; 1024];
    match sock.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => panic!("no notification while waiting for {waiting_for}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn systemd_hears_ready_then_watchdog_then_stopping_and_no_child_inherits_the_socket() {
    require_root();
    let dir = unique_root("notify-socket");
    std::fs::create_dir_all(&dir).expect("notify socket dir");
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("binding the notify socket");
    sock.set_read_timeout(Some(DEADLINE)).expect("read timeout");
    let opts = Options {
        env: vec![
            ("NOTIFY_SOCKET".into(), path.display().to_string()),
            // A ping every 100 ms.
            ("WATCHDOG_USEC".into(), "200000".into()),
        ],
        ..Options::default()
    };
    let (mut fx, image, pod) = Fixture::with_busybox_pod("notify", opts).await;
    let pid = fx.d.pid().expect("daemon pid");

    // The daemon answered Version before the fixture returned; READY=1 came first,
    // and the pings that followed while nobody read never stalled the daemon (it
    // pulled and ran the pod meanwhile).
    let ready = next(&sock, "READY=1");
    assert!(
        ready.starts_with("READY=1\n"),
        "first notification: {ready:?}"
    );
    assert!(ready.contains(&format!("MAINPID={pid}")), "{ready:?}");
    assert!(
        ready.contains(&fx.d.socket().display().to_string()),
        "status names the socket: {ready:?}"
    );
    let start = Instant::now();
    for i in 0..3 {
        let ping = next(&sock, "WATCHDOG=1");
        assert_eq!(ping, "WATCHDOG=1", "ping {i}");
    }
    assert!(start.elapsed() < DEADLINE);

    // Children (the shim, the pod's infra process) never see the variables.
    let id = fx
        .run(
            &pod,
            ContainerBuilder::new("sleeper", &image).command(["sleep", "600"]),
        )
        .await;
    let root = fx.d.root.display().to_string();
    let children: Vec<String> = processes_mentioning(&root)
        .into_iter()
        .filter_map(|p| p.split(':').next().map(str::to_string))
        .filter(|p| *p != pid.to_string())
        .collect();
    assert!(
        !children.is_empty(),
        "no shim or infra process found under {root}"
    );
    for child in &children {
        let environ = std::fs::read(format!("/proc/{child}/environ")).unwrap_or_default();
        let environ = String::from_utf8_lossy(&environ);
        for var in ["NOTIFY_SOCKET=", "WATCHDOG_USEC="] {
            assert!(!environ.contains(var), "process {child} inherited {var}");
        }
    }
    fx.remove_container(&id).await;

    // The queue filled with pings while nobody read it (criusd dropped the rest):
    // empty it so that STOPPING=1 finds room, then SIGTERM.
    sock.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 1024];
    while sock.recv(&mut buf).is_ok() {}
    sock.set_nonblocking(false).expect("blocking");
    fx.d.stop().await.expect("stopping criusd");
    let mut stopping = next(&sock, "STOPPING=1");
    while stopping == "WATCHDOG=1" {
        stopping = next(&sock, "STOPPING=1");
    }
    assert!(stopping.starts_with("STOPPING=1"), "{stopping:?}");
    fx.d.spawn().await.expect("restarting criusd");
    fx.finish().await;
    drop(sock);
    std::fs::remove_dir_all(&dir).expect("removing the notify socket dir");
}
