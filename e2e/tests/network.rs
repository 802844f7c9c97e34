//! Pod networking through criusd: the built-in bridge with its IPAM and
//! hostPorts, restart reconcile, and Debian's CNI plugins through a conflist. Only
//! loopback and addresses inside namespaces these tests made are contacted.
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crius_e2e::v1 as cri;
use crius_e2e::*;
use tonic::Code;

fn netns_of(resp: &cri::PodSandboxStatusResponse) -> String {
    let info: serde_json::Value = serde_json::from_str(&resp.info["info"]).unwrap();
    info["namespaces"]["network"].as_str().unwrap().to_string()
}

/// A TCP server in the pod that answers `reply` to every connection until dropped.
/// Serving again after each connection matters: busybox `nc -l` exits when it sees the
/// client's EOF before it has read `reply` from its pipe, so a one-shot server can
/// end without answering. It runs in its own process group, killed as a whole.
struct PodServer(Child);

impl PodServer {
    fn start(netns: &str, port: u16, reply: &str) -> PodServer {
        use std::os::unix::process::CommandExt;
        let child = Command::new("nsenter")
            .args([
                &format!("--net={netns}"),
                "/bin/busybox",
                "sh",
                "-c",
                &format!("while :; do echo {reply} | /bin/busybox nc -l -p {port}; done"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        PodServer(child)
    }
}

impl Drop for PodServer {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(-(self.0.id() as i32));
        let _ = nix::sys::signal::kill(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

/// Connects from inside a pod and returns what the server said.
fn fetch_from_pod(netns: &str, ip: &str, port: u16) -> Option<String> {
    let out = Command::new("timeout")
        .args([
            "5",
            "nsenter",
            &format!("--net={netns}"),
            "/bin/busybox",
            "nc",
            ip,
            &port.to_string(),
        ])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn fetch_from_host(addr: &str) -> Option<String> {
    let mut s =
        std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    let buf = buf.trim().to_string();
    (!buf.is_empty()).then_some(buf)
}

/// Serves `reply` on `port` in `netns` and runs `fetch` until it gets an answer (within
/// the deadline); returns the answer once the server is gone.
async fn served(
    netns: &str,
    port: u16,
    reply: &str,
    what: &str,
    mut fetch: impl FnMut() -> Option<String>,
) -> String {
    let server = PodServer::start(netns, port, reply);
    let got = eventually(DEADLINE, what, || {
        let got = fetch();
        async move { got }
    })
    .await;
    drop(server);
    got
}

fn pod_with_port(name: &str, container_port: i32, host_port: i32) -> PodBuilder {
    PodBuilder::new(name).tcp_port(container_port, host_port)
}

/// A pod asking for `host_port` (TCP) is refused, naming the port.
async fn assert_port_taken(d: &mut Daemon, name: &str, host_port: u16) {
    let err = run_pod(&mut d.rt, pod_with_port(name, 9090, i32::from(host_port)))
        .await
        .unwrap_err();
    assert!(err.message().contains(&host_port.to_string()), "{err}");
}

fn free_tcp_port() -> u16 {
    crius_e2e::registry::free_port()
}

#[tokio::test(flavor = "multi_thread")]
async fn bridge_pod_to_pod_host_port_and_restart() {
    let mut d = Daemon::start("net-bridge").await;
    let host_port = free_tcp_port();
    let a = run_pod(
        &mut d.rt,
        pod_with_port("net-a", 8080, i32::from(host_port)),
    )
    .await
    .unwrap();
    let b = run_pod(&mut d.rt, PodBuilder::new("net-b")).await.unwrap();
    let sa = pod_status(&mut d.rt, &a, true).await.unwrap();
    let sb = pod_status(&mut d.rt, &b, true).await.unwrap();
    let (ns_a, ns_b) = (netns_of(&sa), netns_of(&sb));
    let (ip_a, ip_b) = (pod_ip(&sa), pod_ip(&sb));
    assert_ne!(ip_a, ip_b);

    // Pod to pod across the bridge.
    let got = served(&ns_a, 7000, "from-a", "pod b to reach pod a", || {
        fetch_from_pod(&ns_b, &ip_a, 7000)
    })
    .await;
    assert_eq!(got, "from-a");

    // hostPort from the host's loopback.
    let got = served(&ns_a, 8080, "via-hostport", "127.0.0.1:hostPort", || {
        fetch_from_host(&format!("127.0.0.1:{host_port}"))
    })
    .await;
    assert_eq!(got, "via-hostport");

    // The same host port and protocol again is refused, naming the port, and leaves nothing.
    assert_port_taken(&mut d, "net-c", host_port).await;
    assert_eq!(list_pods(&mut d.rt, None).await.len(), 2);

    // A crash and restart keeps the pods' addresses and the hostPort working.
    d.crash_and_restart().await;
    let sa2 = pod_status(&mut d.rt, &a, false).await.unwrap();
    assert_eq!(pod_ip(&sa2), ip_a);
    let got = served(
        &ns_a,
        8080,
        "after-restart",
        "hostPort after restart",
        || fetch_from_host(&format!("127.0.0.1:{host_port}")),
    )
    .await;
    assert_eq!(got, "after-restart");
    // The port is still reserved after the restart.
    assert_port_taken(&mut d, "net-d", host_port).await;

    remove_pod(&mut d.rt, &a).await.unwrap();
    remove_pod(&mut d.rt, &b).await.unwrap();
    assert!(
        d.net.pod_leftovers().is_empty(),
        "{:?}",
        d.net.pod_leftovers()
    );
    // Freed: the port can be used by a new pod.
    let c = run_pod(
        &mut d.rt,
        pod_with_port("net-e", 9090, i32::from(host_port)),
    )
    .await
    .expect("port free again");
    remove_pod(&mut d.rt, &c).await.unwrap();
    d.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn many_cycles_leak_no_interface_lease_or_rule() {
    // A /28 has 13 pod addresses: leaked leases would exhaust it within the cycles.
    let mut d = Daemon::start_with("net-cycles", Options::default().with_subnet("{net}0/28")).await;
    let links_before = run_cmd("ip", &["-o", "link"]).unwrap().lines().count();
    for i in 0..40 {
        let id = run_pod(&mut d.rt, pod_with_port(&format!("cycle{i}"), 80, 0))
            .await
            .expect("run");
        remove_pod(&mut d.rt, &id).await.unwrap();
    }
    let links_after = run_cmd("ip", &["-o", "link"]).unwrap().lines().count();
    // The bridge appears with the first pod and stays (as cni0 does); nothing else.
    assert!(
        links_after <= links_before + 1,
        "{links_before} -> {links_after}"
    );
    assert!(
        d.net.pod_leftovers().is_empty(),
        "{:?}",
        d.net.pod_leftovers()
    );
    d.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cni_plugins_from_a_conflist() {
    let plugins = std::path::Path::new("/usr/lib/cni/bridge");
    assert!(
        plugins.exists(),
        "install Debian's containernetworking-plugins"
    );
    let mut d = Daemon::start("net-cni").await;
    // Before any config: the built-in bridge serves (backend "auto").
    let first = run_pod(&mut d.rt, PodBuilder::new("before-cni"))
        .await
        .unwrap();
    let ip_first = pod_ip(&pod_status(&mut d.rt, &first, false).await.unwrap());
    assert!(ip_first.starts_with(d.net.subnet.trim_end_matches("0/24")));

    // A conflist appears: new pods use the plugins, without a restart.
    let cni = TestNetwork::unique();
    let cni_bridge = format!("cc{}", &cni.bridge[2..]);
    let conflist = serde_json::json!({
        "cniVersion": "0.4.0",
        "name": format!("crius-test-{}", &cni.bridge[2..]),
        "plugins": [
            {"type": "bridge", "bridge": cni_bridge, "isGateway": true, "ipMasq": false, "hairpinMode": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": cni.subnet}]], "dataDir": d.root.join("cni-ipam").display().to_string()}},
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "loopback"}
        ]
    });
    std::fs::write(
        d.root.join("cni-conf/10-test.conflist"),
        serde_json::to_vec_pretty(&conflist).unwrap(),
    )
    .unwrap();
    let st =
        d.rt.status(cri::StatusRequest { verbose: false })
            .await
            .unwrap()
            .into_inner();
    assert!(
        st.status
            .unwrap()
            .conditions
            .iter()
            .any(|c| c.r#type == "NetworkReady" && c.status)
    );
    let a = run_pod(&mut d.rt, PodBuilder::new("cni-a"))
        .await
        .expect("pod through the CNI chain");
    let b = run_pod(&mut d.rt, PodBuilder::new("cni-b"))
        .await
        .expect("second pod through the CNI chain");
    let (sa, sb) = (
        pod_status(&mut d.rt, &a, true).await.unwrap(),
        pod_status(&mut d.rt, &b, true).await.unwrap(),
    );
    let cni_prefix = cni.subnet.trim_end_matches("0/24");
    assert!(
        pod_ip(&sa).starts_with(cni_prefix),
        "{} in {}",
        pod_ip(&sa),
        cni.subnet
    );
    let ip_a = pod_ip(&sa);
    let ns_b = netns_of(&sb);
    let got = served(
        &netns_of(&sa),
        7000,
        "cni-pod",
        "pod to pod over the CNI bridge",
        || fetch_from_pod(&ns_b, &ip_a, 7000),
    )
    .await;
    assert_eq!(got, "cni-pod");

    // DEL works after a restart (from the cached result).
    d.crash_and_restart().await;
    remove_pod(&mut d.rt, &a).await.unwrap();
    remove_pod(&mut d.rt, &b).await.unwrap();
    // host-local released both addresses.
    let ipam_dir = d.root.join("cni-ipam");
    let leases: Vec<_> = std::fs::read_dir(&ipam_dir)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|net| {
            std::fs::read_dir(net.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(cni_prefix))
        .collect();
    assert!(leases.is_empty(), "host-local leases left: {leases:?}");
    let veths = run_cmd("ip", &["-o", "link", "show", "master", &cni_bridge]).unwrap_or_default();
    assert!(veths.trim().is_empty(), "{veths}");
    // The pod made before the conflist still tears down through the bridge.
    remove_pod(&mut d.rt, &first).await.unwrap();
    let err = pod_status(&mut d.rt, &first, false).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // Test-owned CNI objects: the plugin's bridge, its IPAM dir and the config.
    let _ = run_cmd("ip", &["link", "del", &cni_bridge]);
    let _ = std::fs::remove_dir_all(&ipam_dir);
    let _ = std::fs::remove_file(d.root.join("cni-conf/10-test.conflist"));
    d.finish().await;
}
