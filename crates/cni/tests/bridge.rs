//! The built-in bridge backend on real bridges, veths, namespaces and iptables.
//! Root only; every name, subnet and chain is unique to the test and removed by it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{SocketAddr, UdpSocket};

use common::*;
use crius_cni::{LeaseStore, NetworkBackend, NetworkError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_to_pod_across_the_bridge() {
    let net = Net::new(false);
    let mut a = Pod::new();
    let b = Pod::new();
    let sa = net.backend.setup(&a.request(&[])).await.unwrap();
    let sb = net.backend.setup(&b.request(&[])).await.unwrap();
    assert_eq!(sa.ips.len(), 1);
    assert!(net.cfg.subnet.contains(sa.ips[0]));
    assert_ne!(sa.ips[0], sb.ips[0]);
    assert!(
        a.links().contains(&format!("inet {}/24", sa.ips[0])),
        "{}",
        a.links()
    );
    a.serve_http(80, "hello-from-a");
    expect_wget(
        &b,
        &format!("http://{}:80/index.html", sa.ips[0]),
        "hello-from-a",
    );
    assert_eq!(net.lease_count(), 2);
    net.backend.teardown(&a.request(&[])).await.unwrap();
    net.backend.teardown(&b.request(&[])).await.unwrap();
    // Idempotent.
    net.backend.teardown(&b.request(&[])).await.unwrap();
    assert_eq!(net.lease_count(), 0);
    assert!(
        net.bridge_ports().trim().is_empty(),
        "{}",
        net.bridge_ports()
    );
    net.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_host_port_from_localhost_another_pod_and_hairpin() {
    let net = Net::new(false);
    let hp = free_port();
    let mut a = Pod::new();
    let b = Pod::new();
    let ra = a.request(&[tcp(hp, 8080)]);
    let sa = net.backend.setup(&ra).await.unwrap();
    net.backend.setup(&b.request(&[])).await.unwrap();
    a.serve_http(8080, "served-by-a");
    let local = SocketAddr::from(([127, 0, 0, 1], hp));
    poll(20, "127.0.0.1:hostPort", || {
        host_http(local).filter(|b| b.contains("served-by-a"))
    });
    let via_node = format!("http://{}:{hp}/index.html", net.gateway());
    expect_wget(&b, &via_node, "served-by-a");
    // Hairpin: the pod reaches itself through its own host port.
    expect_wget(&a, &via_node, "served-by-a");
    assert!(
        net.our_rules()
            .iter()
            .any(|l| l.contains(&format!("{}:8080", sa.ips[0])))
    );
    net.backend.teardown(&ra).await.unwrap();
    assert!(
        !net.our_rules()
            .iter()
            .any(|l| l.contains(&net.backend.pod_chain(&a.id))),
        "pod chain left"
    );
    assert!(host_http(local).is_none_or(|b| !b.contains("served-by-a")));
    net.backend.teardown(&b.request(&[])).await.unwrap();
    net.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_host_port_and_conntrack_flushed_on_removal() {
    let net = Net::new(false);
    let hp = free_port();
    let a = Pod::new();
    let b = Pod::new();
    let ra = a.request(&[udp(hp, 5300)]);
    net.backend.setup(&ra).await.unwrap();
    let _echo_a = UdpEcho::start(&a.path, 5300, "A:");
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = SocketAddr::from(([127, 0, 0, 1], hp));
    assert_eq!(udp_ask(&client, to, "ping", 20).as_deref(), Some("A:ping"));
    net.backend.teardown(&ra).await.unwrap();
    // Same client port, same host port, now served by pod B: only a flushed
    // conntrack entry lets the datagrams reach B.
    let rb = b.request(&[udp(hp, 5300)]);
    net.backend.setup(&rb).await.unwrap();
    let _echo_b = UdpEcho::start(&b.path, 5300, "B:");
    assert_eq!(udp_ask(&client, to, "ping", 20).as_deref(), Some("B:ping"));
    net.backend.teardown(&rb).await.unwrap();
    net.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_host_port_is_refused_with_the_port_named() {
    let net = Net::new(false);
    let hp = free_port();
    let a = Pod::new();
    let b = Pod::new();
    net.backend.setup(&a.request(&[tcp(hp, 80)])).await.unwrap();
    let err = net
        .backend
        .setup(&b.request(&[tcp(hp, 81)]))
        .await
        .unwrap_err();
    assert!(matches!(err, NetworkError::HostPortInUse { host_port, .. } if host_port == hp));
    assert!(err.to_string().contains(&format!("{hp}/TCP")), "{err}");
    assert!(
        b.links().lines().all(|l| !l.contains("eth0")),
        "refused pod got an interface"
    );
    // Same port, other protocol: fine.
    net.backend.setup(&b.request(&[udp(hp, 81)])).await.unwrap();
    assert_eq!(net.lease_count(), 2);
    net.backend
        .teardown(&a.request(&[tcp(hp, 80)]))
        .await
        .unwrap();
    net.backend
        .teardown(&b.request(&[udp(hp, 81)]))
        .await
        .unwrap();
    net.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_ipv6() {
    let net = Net::new(true);
    let v6 = net.cfg.subnet_v6.unwrap();
    let hp = free_port();
    let mut a = Pod::new();
    let b = Pod::new();
    let ra = a.request(&[tcp(hp, 80)]);
    let sa = net.backend.setup(&ra).await.unwrap();
    let sb = net.backend.setup(&b.request(&[])).await.unwrap();
    assert_eq!(sa.ips.len(), 2, "{:?}", sa.ips);
    assert!(
        sa.ips[0].is_ipv4() && v6.contains(sa.ips[1]),
        "{:?}",
        sa.ips
    );
    assert!(v6.contains(sb.ips[1]));
    assert_eq!(net.lease_count(), 4);
    a.serve_http(80, "v6-hello");
    // Pod to pod over IPv6, and to A's host port through the IPv6 gateway.
    expect_wget(
        &b,
        &format!("http://[{}]:80/index.html", sa.ips[1]),
        "v6-hello",
    );
    let gw6 = v6.gateway().unwrap();
    expect_wget(&b, &format!("http://[{gw6}]:{hp}/index.html"), "v6-hello");
    expect_wget(
        &b,
        &format!("http://{}:{hp}/index.html", net.gateway()),
        "v6-hello",
    );
    let rules = net.our_rules();
    assert!(
        rules
            .iter()
            .any(|l| l.starts_with("ip6tables-save") && l.contains("DNAT"))
    );
    net.backend.teardown(&ra).await.unwrap();
    net.backend.teardown(&b.request(&[])).await.unwrap();
    assert_eq!(net.lease_count(), 0);
    net.finish().await;
}

fn link_names() -> std::collections::BTreeSet<String> {
    run_ok("ip", &["-o", "link"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_cycles_leak_nothing() {
    let net = Net::new(false);
    let pod = Pod::new();
    let hp = free_port();
    // Warm up: the first setup creates the bridge and the base chains.
    let mut warm = pod.request(&[]);
    warm.pod_id = format!("warm-{}", rand_hex(8));
    net.backend.setup(&warm).await.unwrap();
    net.backend.teardown(&warm).await.unwrap();
    let links_before = link_names();
    let rules_before = net.our_rules();
    let mut ids = Vec::new();
    for i in 0..100 {
        let mut req = pod.request(&[tcp(hp, 80), udp(hp, 53)]);
        req.pod_id = format!("cycle-{i}-{}", rand_hex(8));
        ids.push(req.pod_id.clone());
        let st = net.backend.setup(&req).await.unwrap();
        assert_eq!(st.ips.len(), 1);
        assert_eq!(net.lease_count(), 1);
        net.backend.teardown(&req).await.unwrap();
    }
    // Other tests run in parallel: compare only links that can be ours.
    let ours = |s: &std::collections::BTreeSet<String>| -> Vec<String> {
        s.iter()
            .filter(|n| {
                **n == net.cfg.bridge || ids.iter().any(|id| **n == net.backend.veth_name(id))
            })
            .cloned()
            .collect()
    };
    assert_eq!(ours(&link_names()), ours(&links_before), "links leaked");
    assert_eq!(net.our_rules(), rules_before, "rules leaked");
    assert_eq!(net.lease_count(), 0, "leases leaked");
    assert!(net.bridge_ports().trim().is_empty());
    assert!(!pod.links().contains("eth0"));
    net.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_setup_is_undone_and_half_made_pods_tear_down() {
    let net = Net::new(false);
    let hp = free_port();
    // 1. A step fails late (the pod already has an eth0): the lease, the host port
    //    and the veth are undone.
    let a = Pod::new();
    let o = a.exec(&[
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ra = a.request(&[tcp(hp, 80)]);
    let err = net.backend.setup(&ra).await.unwrap_err();
    assert!(err.to_string().contains("veth"), "{err}");
    assert_eq!(net.lease_count(), 0);
    assert!(net.bridge_ports().trim().is_empty());
    assert!(!link_names().contains(&net.backend.veth_name(&a.id)));
    // The host port was given back: another pod can take it.
    let b = Pod::new();
    let rb = b.request(&[tcp(hp, 80)]);
    net.backend.setup(&rb).await.unwrap();
    // 2. Half-made: the veth vanished behind crius's back; teardown still removes
    //    the rest (rules, lease) and stays idempotent.
    run_ok("ip", &["link", "del", &net.backend.veth_name(&b.id)]);
    net.backend.teardown(&rb).await.unwrap();
    net.backend.teardown(&rb).await.unwrap();
    assert_eq!(net.lease_count(), 0);
    assert!(
        !net.our_rules()
            .iter()
            .any(|l| l.contains(&net.backend.pod_chain(&b.id)))
    );
    // 3. A pod whose namespace is already gone.
    let c = Pod::new();
    let rc = c.request(&[udp(hp, 53)]);
    net.backend.setup(&rc).await.unwrap();
    drop(c);
    net.backend.teardown(&rc).await.unwrap();
    assert_eq!(net.lease_count(), 0);
    // 4. A pod never set up at all.
    net.backend
        .teardown(&Pod::new().request(&[tcp(hp, 80)]))
        .await
        .unwrap();
    net.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_after_a_crash_removes_orphans_and_restores_live_pods() {
    let net = Net::new(false);
    let (hp1, hp2) = (free_port(), free_port());
    let mut live = Pod::new();
    let dead = Pod::new();
    let r_live = live.request(&[tcp(hp1, 80)]);
    let r_dead = dead.request(&[tcp(hp2, 80)]);
    let s_live = net.backend.setup(&r_live).await.unwrap();
    net.backend.setup(&r_dead).await.unwrap();
    // "Crash": the daemon restarts with the same lease store, the live pod's rules
    // were lost meanwhile, and the dead pod's things are orphans.
    let chain = net.backend.pod_chain(&live.id);
    let saved = run_ok("iptables-save", &["-t", "nat"]);
    let mut script = String::from("*nat\n");
    for l in saved
        .lines()
        .filter(|l| l.starts_with("-A ") && l.ends_with(&format!("-j {chain}")))
    {
        script += &format!("-D{}\n", &l[2..]);
    }
    script += &format!("-F {chain}\n-X {chain}\nCOMMIT\n");
    let mut child = std::process::Command::new("iptables-restore")
        .arg("--noflush")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    let restarted = crius_cni::BridgeBackend::new(net.cfg.clone(), net.leases.clone()).unwrap();
    let report = restarted
        .reconcile(std::slice::from_ref(&r_live))
        .await
        .unwrap();
    assert_eq!(report.leases_released, 1, "{report:?}");
    assert_eq!(report.veths_deleted, 1, "{report:?}");
    assert_eq!(report.chains_deleted, 1, "{report:?}");
    assert_eq!(report.pods_restored, 1, "{report:?}");
    assert_eq!(net.lease_count(), 1);
    assert!(!link_names().contains(&net.backend.veth_name(&dead.id)));
    assert!(
        !net.our_rules()
            .iter()
            .any(|l| l.contains(&net.backend.pod_chain(&dead.id)))
    );
    // The live pod works again through its host port; the reservation is back.
    live.serve_http(80, "still-alive");
    poll(20, "restored hostPort", || {
        host_http(std::net::SocketAddr::from(([127, 0, 0, 1], hp1)))
            .filter(|b| b.contains("still-alive"))
    });
    let other = Pod::new();
    let err = restarted
        .setup(&other.request(&[tcp(hp1, 80)]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&hp1.to_string()), "{err}");
    assert_eq!(
        restarted.setup(&r_live).await.unwrap().ips,
        s_live.ips,
        "setup again keeps the lease"
    );
    restarted.teardown(&r_live).await.unwrap();
    assert_eq!(net.lease_count(), 0);
    net.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sctp_and_host_ip_mappings_are_written_and_removed() {
    let net = Net::new(false);
    let hp = free_port();
    let a = Pod::new();
    let sctp = crius_cni::PortMapping {
        protocol: crius_cni::Protocol::Sctp,
        container_port: 9999,
        host_port: hp,
        host_ip: None,
    };
    let bound = crius_cni::PortMapping {
        host_ip: Some(std::net::IpAddr::from([127, 0, 0, 1])),
        ..tcp(hp, 80)
    };
    let req = a.request(&[sctp, bound]);
    let st = net.backend.setup(&req).await.unwrap();
    let rules = net.our_rules();
    let ip = st.ips[0];
    assert!(
        rules
            .iter()
            .any(|l| l.contains("-p sctp") && l.contains(&format!("{ip}:9999"))),
        "{rules:?}"
    );
    assert!(
        rules
            .iter()
            .any(|l| l.contains("-d 127.0.0.1/32") && l.contains("-p tcp")),
        "{rules:?}"
    );
    // The same TCP port on another host IP is free; on every IP it is not.
    let b = Pod::new();
    let other_ip = crius_cni::PortMapping {
        host_ip: Some(std::net::IpAddr::from([127, 0, 0, 2])),
        ..tcp(hp, 80)
    };
    net.backend.setup(&b.request(&[other_ip])).await.unwrap();
    let c = Pod::new();
    let err = net
        .backend
        .setup(&c.request(&[tcp(hp, 80)]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&format!("{hp}/TCP")), "{err}");
    net.backend.teardown(&req).await.unwrap();
    net.backend.teardown(&b.request(&[other_ip])).await.unwrap();
    assert!(!net.our_rules().iter().any(|l| l.contains("-j DNAT")));
    net.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_pods_in_parallel_get_distinct_addresses() {
    let net = Net::new(true);
    let pods: Vec<Pod> = (0..20).map(|_| Pod::new()).collect();
    let reqs: Vec<_> = pods
        .iter()
        .map(|p| p.request(&[tcp(free_port(), 80)]))
        .collect();
    let results = futures_util::future::join_all(reqs.iter().map(|r| net.backend.setup(r))).await;
    let mut ips = std::collections::HashSet::new();
    for r in results {
        for ip in r.unwrap().ips {
            assert!(ips.insert(ip), "{ip} given twice");
        }
    }
    assert_eq!(ips.len(), 40);
    assert_eq!(net.lease_count(), 40);
    let results =
        futures_util::future::join_all(reqs.iter().map(|r| net.backend.teardown(r))).await;
    for r in results {
        r.unwrap();
    }
    assert_eq!(net.lease_count(), 0);
    assert!(net.bridge_ports().trim().is_empty());
    assert!(!net.our_rules().iter().any(|l| l.contains("-j DNAT")));
    net.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_setup_then_restart_leaves_nothing() {
    // The state a crash between setup steps leaves: a lease, a veth on the bridge
    // whose pod side never got configured, and a pod chain, with no live pod.
    let net = Net::new(false);
    let warm = Pod::new();
    let rw = warm.request(&[tcp(free_port(), 80)]);
    net.backend.setup(&rw).await.unwrap();
    net.backend.teardown(&rw).await.unwrap();
    let half = Pod::new();
    let rh = half.request(&[tcp(free_port(), 80)]);
    net.leases
        .insert(&crius_cni::Lease {
            network: net.cfg.bridge.clone(),
            pod_id: half.id.clone(),
            family: crius_cni::IpFamily::V4,
            address: net.cfg.subnet.nth(77).unwrap(),
        })
        .unwrap();
    let veth = net.backend.veth_name(&half.id);
    run_ok(
        "ip",
        &[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &half.name,
        ],
    );
    run_ok("ip", &["link", "set", &veth, "master", &net.cfg.bridge]);
    let chain = net.backend.pod_chain(&half.id);
    let hostports = format!("{}-HOSTPORTS", net.cfg.chain_prefix);
    let script = format!(
        "*nat\n:{chain} - [0:0]\n-A {chain} -p tcp -m tcp --dport 1 -j DNAT --to-destination 10.0.0.1:1\n-A {hostports} -j {chain}\nCOMMIT\n"
    );
    let mut child = std::process::Command::new("iptables-restore")
        .arg("--noflush")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    // Restart: a new backend over the same store reconciles with no live pods.
    let restarted = crius_cni::BridgeBackend::new(net.cfg.clone(), net.leases.clone()).unwrap();
    let report = restarted.reconcile(&[]).await.unwrap();
    assert_eq!(
        (
            report.leases_released,
            report.veths_deleted,
            report.chains_deleted
        ),
        (1, 1, 1),
        "{report:?}"
    );
    assert_eq!(net.lease_count(), 0);
    assert!(net.bridge_ports().trim().is_empty());
    assert!(!net.our_rules().iter().any(|l| l.contains(&chain)));
    assert!(
        !half.links().contains("eth0"),
        "the pod side went with the veth"
    );
    // Teardown of the half-made pod afterwards is still fine.
    restarted.teardown(&rh).await.unwrap();
    net.finish().await;
}
