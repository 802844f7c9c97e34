//! Helpers for the root-only network tests: test-made namespaces ("pods"), unique
//! bridges, subnets and chain prefixes, busybox servers and polling with deadlines.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crius_cni::{
    BridgeBackend, BridgeConfig, IpNet, LeaseStore, MemoryLeaseStore, PodNetworkRequest,
    PortMapping, Protocol,
};

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests create bridges, veths, namespaces and iptables chains: run them as root"
    );
}

pub fn rand_hex(n: usize) -> String {
    let mut b = vec![0u8; n.div_ceil(2)];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect::<String>()[..n].to_string()
}

fn rand_u16() -> u16 {
    u16::from_str_radix(&rand_hex(4), 16).unwrap()
}

pub fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"))
}

pub fn run_ok(cmd: &str, args: &[&str]) -> String {
    let o = run(cmd, args);
    assert!(
        o.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A /24 in 10.200-250.x.0 that no host address or route uses.
pub fn free_subnet_v4() -> IpNet {
    let used = run_ok("ip", &["-o", "addr"]) + &run_ok("ip", &["route"]);
    loop {
        let r = rand_u16();
        let a = 200 + (r % 51) as u8;
        let b = (r >> 8) as u8;
        let prefix = format!("10.{a}.{b}.");
        if !used.contains(&prefix) {
            return format!("10.{a}.{b}.0/24").parse().unwrap();
        }
    }
}

/// An fd00:<random>::/64 no host address uses.
pub fn free_subnet_v6() -> IpNet {
    let used = run_ok("ip", &["-o", "-6", "addr"]);
    loop {
        let r = rand_u16();
        if r == 0 {
            continue;
        }
        let p = format!("fd00:{r:x}:");
        if !used.contains(&p) {
            return format!("fd00:{r:x}::/64").parse().unwrap();
        }
    }
}

/// A unique bridge configuration (IPv4 only unless `v6`).
pub fn unique_config(v6: bool) -> BridgeConfig {
    let h = rand_hex(8);
    BridgeConfig {
        bridge: format!("cr{h}"),
        subnet: free_subnet_v4(),
        subnet_v6: v6.then(free_subnet_v6),
        chain_prefix: format!("CT{}", h.to_uppercase()),
        ..BridgeConfig::default()
    }
}

/// A test "pod": a network namespace pinned by `ip netns add`, deleted on drop.
pub struct Pod {
    pub name: String,
    pub path: PathBuf,
    pub id: String,
    children: Vec<Child>,
    dirs: Vec<PathBuf>,
}

impl Pod {
    pub fn new() -> Self {
        let name = format!("crt-{}", rand_hex(10));
        run_ok("ip", &["netns", "add", &name]);
        Self {
            path: PathBuf::from(format!("/run/netns/{name}")),
            id: rand_hex(32),
            name,
            children: Vec::new(),
            dirs: Vec::new(),
        }
    }

    pub fn request(&self, ports: &[PortMapping]) -> PodNetworkRequest {
        PodNetworkRequest {
            pod_id: self.id.clone(),
            name: format!("pod-{}", &self.id[..6]),
            namespace: "test".into(),
            uid: self.id.clone(),
            netns: self.path.clone(),
            port_mappings: ports.to_vec(),
            ..Default::default()
        }
    }

    pub fn exec(&self, args: &[&str]) -> Output {
        let net = format!("--net={}", self.path.display());
        let mut a = vec![net.as_str()];
        a.extend_from_slice(args);
        run("nsenter", &a)
    }

    /// busybox httpd on `port` serving `/index.html` = `body`.
    pub fn serve_http(&mut self, port: u16, body: &str) {
        let dir = std::env::temp_dir().join(format!("crt-www-{}", rand_hex(8)));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("index.html"), body).unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.path.display()))
            .args(["/bin/busybox", "httpd", "-f", "-p", &port.to_string(), "-h"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.children.push(child);
        self.dirs.push(dir);
    }

    /// An HTTP GET from inside the pod with `busybox nc` (busybox-static's wget
    /// crashes here); `url` is `http://host:port/path`. The response or None.
    pub fn wget(&self, url: &str) -> Option<String> {
        let rest = url.strip_prefix("http://").unwrap();
        let (hostport, path) = rest.split_once('/').unwrap();
        let (host, port) = hostport.rsplit_once(':').unwrap();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", self.path.display()))
            .args(["/bin/busybox", "nc", "-w", "2", host, port])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let _ = child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("GET /{path} HTTP/1.0\r\n\r\n").as_bytes());
        let o = child.wait_with_output().unwrap();
        let body = String::from_utf8_lossy(&o.stdout).into_owned();
        (o.status.success() && body.starts_with("HTTP/")).then_some(body)
    }

    /// Links inside the pod.
    pub fn links(&self) -> String {
        String::from_utf8_lossy(&self.exec(&["ip", "-o", "addr"]).stdout).into_owned()
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = run("ip", &["netns", "del", &self.name]);
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Polls `f` until it returns Some, panicking with `what` after `secs`.
pub fn poll<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls until `pod` gets `body` from `url`.
pub fn expect_wget(pod: &Pod, url: &str, body: &str) {
    poll(20, &format!("{url} from pod {}", pod.name), || {
        pod.wget(url).filter(|b| b.contains(body))
    });
}

/// An HTTP GET from the host to `addr` (loopback only).
pub fn host_http(addr: SocketAddr) -> Option<String> {
    assert!(
        addr.ip().is_loopback(),
        "tests only contact loopback from the host"
    );
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// A UDP echo server inside the pod's namespace, on a thread that entered it.
pub struct UdpEcho {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UdpEcho {
    pub fn start(netns: &Path, port: u16, tag: &'static str) -> Self {
        let f = std::fs::File::open(netns).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let s = UdpSocket::bind(("::", port))
                .or_else(|_| UdpSocket::bind(("0.0.0.0", port)))
                .unwrap();
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            tx.send(()).unwrap();
            let mut buf = [0u8; 1500];
            while !stop2.load(Ordering::Relaxed) {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    let mut reply = tag.as_bytes().to_vec();
                    reply.extend_from_slice(&buf[..n]);
                    let _ = s.send_to(&reply, from);
                }
            }
        });
        rx.recv().unwrap();
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends `msg` (made unique per call) over UDP from `sock` to `to` until the answer
/// to this very call comes or `secs` pass; returns the answer with the nonce removed.
/// Late answers to earlier datagrams are skipped.
pub fn udp_ask(sock: &UdpSocket, to: SocketAddr, msg: &str, secs: u64) -> Option<String> {
    let nonce = format!("#{}", rand_hex(8));
    let wire = format!("{msg}{nonce}");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        let _ = sock.send_to(wire.as_bytes(), to);
        while let Ok(n) = sock.recv(&mut buf) {
            let got = String::from_utf8_lossy(&buf[..n]).into_owned();
            if let Some(answer) = got.strip_suffix(&nonce) {
                return Some(answer.to_string());
            }
        }
    }
    None
}

pub fn tcp(host_port: u16, container_port: u16) -> PortMapping {
    PortMapping {
        protocol: Protocol::Tcp,
        container_port,
        host_port,
        host_ip: None,
    }
}

pub fn udp(host_port: u16, container_port: u16) -> PortMapping {
    PortMapping {
        protocol: Protocol::Udp,
        ..tcp(host_port, container_port)
    }
}

/// A host port no listener uses (best effort: random in 20000-60000, probed on loopback).
pub fn free_port() -> u16 {
    loop {
        let p = 20000 + rand_u16() % 40000;
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
            && UdpSocket::bind(("127.0.0.1", p)).is_ok()
        {
            return p;
        }
    }
}

/// A bridge backend on a unique bridge, subnet and chain prefix; everything it made is
/// removed on drop (also on panic) and checked gone by [`Net::finish`].
pub struct Net {
    pub backend: Arc<BridgeBackend>,
    pub leases: Arc<MemoryLeaseStore>,
    pub cfg: BridgeConfig,
    finished: bool,
}

impl Net {
    pub fn new(v6: bool) -> Self {
        require_root();
        let cfg = unique_config(v6);
        let leases = Arc::new(MemoryLeaseStore::new());
        let backend = Arc::new(BridgeBackend::new(cfg.clone(), leases.clone()).unwrap());
        Self {
            backend,
            leases,
            cfg,
            finished: false,
        }
    }

    pub fn gateway(&self) -> IpAddr {
        self.cfg.subnet.gateway().unwrap()
    }

    pub fn lease_count(&self) -> usize {
        self.leases.list(&self.cfg.bridge).unwrap().len()
    }

    /// Lines of iptables-save (both families, nat and filter) naming our prefix.
    pub fn our_rules(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for bin in ["iptables-save", "ip6tables-save"] {
            for t in ["nat", "filter"] {
                for l in run_ok(bin, &["-t", t]).lines() {
                    if l.contains(&self.cfg.chain_prefix) || l.contains(&self.cfg.bridge) {
                        out.insert(format!("{bin} {l}"));
                    }
                }
            }
        }
        out
    }

    /// Ports of our bridge.
    pub fn bridge_ports(&self) -> String {
        run_ok("ip", &["-o", "link", "show", "master", &self.cfg.bridge])
    }

    /// Removes the host network and asserts nothing of ours is left.
    pub async fn finish(mut self) {
        self.backend.remove_host_network().await.unwrap();
        self.finished = true;
        assert!(
            self.our_rules().is_empty(),
            "rules left: {:?}",
            self.our_rules()
        );
        let links = run_ok("ip", &["-o", "link"]);
        assert!(
            !links.contains(&format!(" {}:", self.cfg.bridge)),
            "bridge left"
        );
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let b = self.backend.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let _ = rt.block_on(b.remove_host_network());
        })
        .join();
    }
}
