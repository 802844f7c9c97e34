//! The built-in bridge backend on real bridges, veths, namespaces and iptables.
//! Root only; every name, subnet and chain is unique to the test and removed by it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{SocketAddr, UdpSocket};

use common::*;
use crius_cni::{NetworkBackend, NetworkError};

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
