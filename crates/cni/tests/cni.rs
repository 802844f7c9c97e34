//! The CNI plugin executor: with fake plugins (env, capabilities, chaining, cache,
//! errors, timeouts) and with Debian's containernetworking-plugins on real
//! namespaces (bridge + host-local + portmap + loopback). Root only; every bridge,
//! subnet, directory and namespace is unique to the test and removed by it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use common::*;
use crius_cni::{CniBackend, CniConfig, NetworkBackend, NetworkError};

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        require_root();
        let dir = tempfile::tempdir().unwrap();
        for d in ["net.d", "bin", "cache", "ipam"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        Self { dir }
    }
    fn p(&self, s: &str) -> PathBuf {
        self.dir.path().join(s)
    }
    fn config(&self, debian: bool) -> CniConfig {
        let mut bin_dirs = vec![self.p("bin")];
        if debian {
            bin_dirs.push("/usr/lib/cni".into());
        }
        CniConfig {
            conf_dir: self.p("net.d"),
            bin_dirs,
            cache_dir: self.p("cache"),
            plugin_timeout_secs: 20,
            ifname: "eth0".into(),
        }
    }
    fn write_conf(&self, name: &str, body: &str) {
        std::fs::write(self.p("net.d").join(name), body).unwrap();
    }
    fn log(&self) -> String {
        std::fs::read_to_string(self.p("log")).unwrap_or_default()
    }
    /// A fake plugin: logs "TYPE COMMAND|env|stdin" lines and answers per command.
    fn fake(&self, name: &str, add_body: &str, add_exit: i32) {
        let script = format!(
            r#"#!/bin/sh
stdin=$(cat)
echo "{name} $CNI_COMMAND|$CNI_CONTAINERID|$CNI_IFNAME|$CNI_NETNS|$CNI_ARGS|$CNI_PATH|$stdin" >> {log}
case "$CNI_COMMAND" in
  ADD) echo '{add_body}'; exit {add_exit} ;;
  VERSION) echo '{{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}}' ;;
  SLEEP) ;;
esac
exit 0
"#,
            log = self.p("log").display()
        );
        let path = self.p("bin").join(name);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

const OK_RESULT: &str = r#"{"cniVersion":"1.0.0","ips":[{"address":"10.99.0.5/24"}]}"#;

fn fake_list(name: &str, plugins: &[&str]) -> String {
    let ps: Vec<String> = plugins.iter().map(|p| p.to_string()).collect();
    format!(
        r#"{{"cniVersion":"1.0.0","name":"{name}","plugins":[{}]}}"#,
        ps.join(",")
    )
}

#[tokio::test]
async fn status_follows_the_config_directory() {
    let env = Env::new();
    env.fake("fake-ok", OK_RESULT, 0);
    let cni = CniBackend::new(env.config(false));
    let st = cni.status();
    assert!(!st.ready);
    assert_eq!(st.reason, "NetworkPluginNotReady");
    assert!(st.message.contains("net.d"), "{}", st.message);
    let pod = Pod::new();
    let err = cni.setup(&pod.request(&[])).await.unwrap_err();
    assert!(matches!(err, NetworkError::NotReady { .. }), "{err}");
    // A config whose plugin is missing is not usable, and says why.
    env.write_conf(
        "10-bad.conflist",
        &fake_list("bad", &[r#"{"type":"nonexistent"}"#]),
    );
    let st = cni.status();
    assert!(
        !st.ready && st.message.contains("nonexistent"),
        "{}",
        st.message
    );
    // A usable config added later is picked up without a restart.
    env.write_conf(
        "20-good.conflist",
        &fake_list("good", &[r#"{"type":"fake-ok"}"#]),
    );
    assert!(cni.status().ready, "{:?}", cni.status());
    assert_eq!(cni.network_name().as_deref(), Some("good"));
    let st = cni.setup(&pod.request(&[])).await.unwrap();
    assert_eq!(st.ips[0].to_string(), "10.99.0.5");
    cni.teardown(&pod.request(&[])).await.unwrap();
    // A single-plugin .conf works too (and sorts first).
    env.write_conf(
        "05-single.conf",
        r#"{"cniVersion":"0.4.0","name":"single","type":"fake-ok"}"#,
    );
    assert_eq!(cni.network_name().as_deref(), Some("single"));
    cni.setup(&pod.request(&[])).await.unwrap();
    cni.teardown(&pod.request(&[])).await.unwrap();
}

#[tokio::test]
async fn chain_env_capabilities_cache_check_version_and_del_after_restart() {
    let env = Env::new();
    env.fake("fake-a", OK_RESULT, 0);
    env.fake("fake-b", OK_RESULT, 0);
    env.write_conf(
        "10-chain.conflist",
        &fake_list(
            "chain",
            &[
                r#"{"type":"fake-a","capabilities":{"portMappings":true,"dns":true}}"#,
                r#"{"type":"fake-b"}"#,
            ],
        ),
    );
    let cni = CniBackend::new(env.config(false));
    let pod = Pod::new();
    let mut req = pod.request(&[tcp(8080, 80)]);
    req.dns = Some(crius_cni::DnsConfig {
        servers: vec!["10.96.0.10".into()],
        ..Default::default()
    });
    cni.setup(&req).await.unwrap();
    let log = env.log();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(lines[0].starts_with("fake-a ADD|") && lines[1].starts_with("fake-b ADD|"));
    let f: Vec<&str> = lines[0].splitn(7, '|').collect();
    assert_eq!(f[1], pod.id);
    assert_eq!(f[2], "eth0");
    assert_eq!(f[3], pod.path.display().to_string());
    assert!(f[4].contains("K8S_POD_NAMESPACE=test"), "{}", f[4]);
    assert!(f[4].contains(&format!("K8S_POD_INFRA_CONTAINER_ID={}", pod.id)));
    assert!(f[4].contains(&format!("K8S_POD_UID={}", pod.id)));
    assert!(f[4].contains("K8S_POD_NAME=pod-"));
    assert!(f[5].contains("/bin"));
    let a: serde_json::Value = serde_json::from_str(f[6]).unwrap();
    assert_eq!(a["name"], "chain");
    assert_eq!(a["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
    assert_eq!(a["runtimeConfig"]["dns"]["servers"][0], "10.96.0.10");
    assert!(a.get("prevResult").is_none());
    let b: serde_json::Value =
        serde_json::from_str(lines[1].splitn(7, '|').nth(6).unwrap()).unwrap();
    assert!(b.get("runtimeConfig").is_none(), "no capability declared");
    assert_eq!(b["prevResult"]["ips"][0]["address"], "10.99.0.5/24");
    // CHECK and VERSION.
    cni.check(&req).await.unwrap();
    assert!(env.log().contains("fake-a CHECK|") && env.log().contains("fake-b CHECK|"));
    let v = cni.versions().await.unwrap();
    assert_eq!(v.len(), 2);
    // "Restart" with the config gone: DEL still runs the cached chain, in reverse.
    std::fs::remove_file(env.p("net.d/10-chain.conflist")).unwrap();
    std::fs::remove_file(env.p("log")).unwrap();
    let restarted = CniBackend::new(env.config(false));
    assert!(!restarted.status().ready);
    restarted.teardown(&req).await.unwrap();
    let log = env.log();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(lines[0].starts_with("fake-b DEL|") && lines[1].starts_with("fake-a DEL|"));
    assert!(lines[0].contains("\"prevResult\""));
    let cache: Vec<_> = std::fs::read_dir(env.p("cache/results")).unwrap().collect();
    assert!(cache.is_empty(), "cache entry left after DEL");
    // DEL again: nothing cached, no config: nothing to do.
    restarted.teardown(&req).await.unwrap();
}

#[tokio::test]
async fn plugin_failure_is_undone_and_reports_the_plugin_message() {
    let env = Env::new();
    env.fake("fake-ok", OK_RESULT, 0);
    env.fake(
        "fake-fail",
        r#"{"cniVersion":"1.0.0","code":7,"msg":"boom from fake plugin","details":"disk on fire"}"#,
        1,
    );
    env.write_conf(
        "10.conflist",
        &fake_list(
            "failing",
            &[r#"{"type":"fake-ok"}"#, r#"{"type":"fake-fail"}"#],
        ),
    );
    let cni = CniBackend::new(env.config(false));
    let pod = Pod::new();
    let err = cni.setup(&pod.request(&[])).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("boom from fake plugin") && msg.contains("disk on fire"),
        "{msg}"
    );
    assert!(msg.contains("fake-fail"), "{msg}");
    let log = env.log();
    assert!(
        log.contains("fake-ok DEL|"),
        "the chain was not undone: {log}"
    );
    assert!(
        std::fs::read_dir(env.p("cache/results")).map_or(true, |mut d| d.next().is_none()),
        "a failed ADD left a cache entry"
    );
}

#[tokio::test]
async fn plugin_calls_time_out() {
    let env = Env::new();
    let slow = env.p("bin/fake-slow");
    std::fs::write(&slow, "#!/bin/sh\nexec sleep 30\n").unwrap();
    std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.write_conf(
        "10.conflist",
        &fake_list("slow", &[r#"{"type":"fake-slow"}"#]),
    );
    let mut cfg = env.config(false);
    cfg.plugin_timeout_secs = 1;
    let cni = CniBackend::new(cfg);
    let pod = Pod::new();
    let t = std::time::Instant::now();
    let err = cni.setup(&pod.request(&[])).await.unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");
    // ADD timed out, then the undo DEL timed out too: two timeouts, not 30 s.
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
}

/// A conflist of Debian's plugins on a unique bridge and subnet.
fn debian_conflist(env: &Env, bridge: &str, subnet: &str) -> String {
    format!(
        r#"{{
  "cniVersion": "1.0.0",
  "name": "crt-{bridge}",
  "plugins": [
    {{"type": "bridge", "bridge": "{bridge}", "isGateway": true, "ipMasq": true,
      "hairpinMode": true,
      "ipam": {{"type": "host-local", "ranges": [[{{"subnet": "{subnet}"}}]],
               "routes": [{{"dst": "0.0.0.0/0"}}], "dataDir": "{ipam}"}}}},
    {{"type": "portmap", "capabilities": {{"portMappings": true}}, "snat": true}},
    {{"type": "loopback"}}
  ]
}}"#,
        ipam = env.p("ipam").display()
    )
}

struct Debian {
    env: Env,
    cni: std::sync::Arc<CniBackend>,
    bridge: String,
    subnet: crius_cni::IpNet,
    /// Pods set up, torn down again on drop (also on panic).
    pods: std::sync::Mutex<Vec<crius_cni::PodNetworkRequest>>,
}

impl Debian {
    fn new() -> Self {
        let env = Env::new();
        let bridge = format!("cr{}", rand_hex(8));
        let subnet = free_subnet_v4();
        env.write_conf(
            "10-debian.conflist",
            &debian_conflist(&env, &bridge, &subnet.to_string()),
        );
        let cni = std::sync::Arc::new(CniBackend::new(env.config(true)));
        assert!(cni.status().ready, "{:?}", cni.status());
        Self {
            env,
            cni,
            bridge,
            subnet,
            pods: Default::default(),
        }
    }
    async fn setup(&self, req: &crius_cni::PodNetworkRequest) -> crius_cni::PodNetworkStatus {
        self.pods.lock().unwrap().push(req.clone());
        self.cni.setup(req).await.unwrap()
    }
    fn gateway(&self) -> std::net::IpAddr {
        self.subnet.gateway().unwrap()
    }
    /// iptables lines that mention our subnet or one of the pods.
    fn rules_about(&self, ids: &[&str]) -> Vec<String> {
        let prefix = self.subnet.to_string();
        let net = prefix.rsplit_once('.').unwrap().0.to_string();
        let mut out = Vec::new();
        for t in ["nat", "filter"] {
            for l in run_ok("iptables-save", &["-t", t]).lines() {
                if l.contains(&format!("{net}.")) || ids.iter().any(|id| l.contains(id)) {
                    out.push(l.to_string());
                }
            }
        }
        out
    }
    fn leases(&self) -> Vec<String> {
        let dir = self.env.p("ipam").join(format!("crt-{}", self.bridge));
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("10."))
                    .collect()
            })
            .unwrap_or_default()
    }
    /// Checks nothing of the pods is left, then deletes the bridge the plugin made
    /// (unique to this test). The plugins' shared CNI-HOSTPORT-* chains stay: portmap
    /// owns them and never removes them, and another test may be using them.
    fn finish(self, ids: &[&str]) {
        assert!(self.leases().is_empty(), "leases left: {:?}", self.leases());
        assert!(
            run_ok("ip", &["-o", "link", "show", "master", &self.bridge])
                .trim()
                .is_empty(),
            "veths left on the bridge"
        );
        let _ = run("ip", &["link", "del", &self.bridge]);
        assert!(
            self.rules_about(ids).is_empty(),
            "rules left: {:?}",
            self.rules_about(ids)
        );
    }
}

impl Drop for Debian {
    fn drop(&mut self) {
        let pods = std::mem::take(&mut *self.pods.lock().unwrap());
        let cni = self.cni.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            for p in pods {
                let _ = rt.block_on(cni.teardown(&p));
            }
        })
        .join();
        let _ = run("ip", &["link", "del", &self.bridge]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_plugins_traffic_suite() {
    let d = Debian::new();
    let versions = d.cni.versions().await.unwrap();
    assert!(versions.contains_key("portmap"), "{versions:?}");
    let (hp, hu) = (free_port(), free_port());
    let mut a = Pod::new();
    let b = Pod::new();
    let ra = a.request(&[tcp(hp, 8080), udp(hu, 5300)]);
    let rb = b.request(&[]);
    let sa = d.setup(&ra).await;
    let sb = d.setup(&rb).await;
    assert!(
        d.subnet.contains(sa.ips[0]) && d.subnet.contains(sb.ips[0]),
        "{sa:?} {sb:?}"
    );
    // CHECK reaches the plugins; portmap 1.1.1 (Debian 12) fails it on IPv4-only
    // pods by looking for an IPv6 chain it never made, and says so.
    if let Err(e) = d.cni.check(&ra).await {
        let m = e.to_string();
        assert!(m.contains("portmap CHECK") && m.contains("ipv6"), "{m}");
    }
    a.serve_http(8080, "debian-a");
    // Pod to pod.
    expect_wget(
        &b,
        &format!("http://{}:8080/index.html", sa.ips[0]),
        "debian-a",
    );
    // TCP hostPort from 127.0.0.1 on the host, from another pod, and hairpin.
    poll(20, "127.0.0.1:hostPort via portmap", || {
        host_http(SocketAddr::from(([127, 0, 0, 1], hp))).filter(|r| r.contains("debian-a"))
    });
    let via_node = format!("http://{}:{hp}/index.html", d.gateway());
    expect_wget(&b, &via_node, "debian-a");
    expect_wget(&a, &via_node, "debian-a");
    // UDP hostPort.
    let _echo = UdpEcho::start(&a.path, 5300, "A:");
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = SocketAddr::from(([127, 0, 0, 1], hu));
    assert_eq!(udp_ask(&client, to, "ping", 20).as_deref(), Some("A:ping"));
    assert!(!d.leases().is_empty());
    d.cni.teardown(&ra).await.unwrap();
    d.cni.teardown(&rb).await.unwrap();
    d.cni.teardown(&rb).await.unwrap();
    d.finish(&[&a.id, &b.id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_plugins_del_after_restart_with_the_config_gone() {
    let d = Debian::new();
    let pod = Pod::new();
    let req = pod.request(&[tcp(free_port(), 80)]);
    d.setup(&req).await;
    assert_eq!(d.leases().len(), 1);
    std::fs::remove_file(d.env.p("net.d/10-debian.conflist")).unwrap();
    let restarted = CniBackend::new(d.env.config(true));
    assert!(!restarted.status().ready);
    restarted.teardown(&req).await.unwrap();
    assert!(!pod.links().contains("eth0"));
    d.finish(&[&pod.id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_backend_uses_cni_once_configured_and_tears_down_either() {
    let env = Env::new();
    env.fake("fake-ok", OK_RESULT, 0);
    let net = Net::new(false);
    let auto = crius_cni::AutoBackend::new(
        CniBackend::new(env.config(false)),
        crius_cni::BridgeBackend::new(net.cfg.clone(), net.leases.clone()).unwrap(),
    );
    assert_eq!(auto.name(), "bridge");
    let a = Pod::new();
    let sa = auto.setup(&a.request(&[])).await.unwrap();
    assert!(net.cfg.subnet.contains(sa.ips[0]));
    env.write_conf(
        "10.conflist",
        &fake_list("later", &[r#"{"type":"fake-ok"}"#]),
    );
    assert_eq!(auto.name(), "cni");
    let b = Pod::new();
    let sb = auto.setup(&b.request(&[])).await.unwrap();
    assert_eq!(sb.ips[0].to_string(), "10.99.0.5");
    auto.teardown(&a.request(&[])).await.unwrap();
    auto.teardown(&b.request(&[])).await.unwrap();
    assert!(env.log().contains(&format!("fake-ok DEL|{}", b.id)));
    assert_eq!(net.lease_count(), 0);
    assert!(!auto.cni().has_cached(&b.id));
    net.finish().await;
}
