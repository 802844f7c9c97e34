//! The built-in bridge backend.
//!
//! Setup, in order (each step undone by [`BridgeBackend`]'s teardown if a later one
//! fails): reserve the host ports (in memory, rebuilt by `reconcile`); make sure the
//! bridge, its gateway addresses, the sysctls and the base iptables chains exist;
//! lease one address per family; create the veth pair in one netlink message (host
//! end on the bridge, `eth0` already inside the pod namespace); configure the pod
//! side on a dedicated thread (see `netlink`); write the pod's DNAT chain.
//!
//! Teardown removes the pod's chain and jump, flushes conntrack entries of its UDP
//! mappings, deletes the host veth (which takes `eth0` with it), releases the leases
//! and the host ports. Each step finds its object by a name derived from the pod id,
//! so teardown needs nothing that setup might not have recorded: it is idempotent
//! and works on a half-made pod.
//!
//! Crash recovery: [`BridgeBackend::reconcile`] is given every live pod; leases, veths
//! and chains of any other pod are removed, and the rules of live pods rewritten.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::cidr::IpNet;
use crate::ipam::{self, IpFamily, IpamError, LeaseStore, LeaseStoreError, fnv64};
use crate::iptables::Rules;
use crate::netlink::{Netlink, in_netns};
use crate::{
    BackendStatus, BoxFuture, NetworkBackend, NetworkError, PodNetworkRequest, PodNetworkStatus,
    PortMapping, Protocol,
};

/// Configuration of the built-in bridge (`[network.bridge]` in criusd's config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BridgeConfig {
    /// The bridge device name (at most 15 bytes). Default `crius0`.
    pub bridge: String,
    /// The IPv4 pod subnet; the bridge takes its first host address. Default `10.88.0.0/16`.
    pub subnet: IpNet,
    /// An optional IPv6 pod subnet for dual stack.
    pub subnet_v6: Option<IpNet>,
    /// MTU of the bridge and of both veth ends. Default 1500.
    pub mtu: u32,
    /// Prefix of every iptables chain crius owns (at most 12 characters). Default `CRIUS`.
    pub chain_prefix: String,
    /// Prefix of the host-side veth names (at most 3 characters). Default `vc`.
    pub veth_prefix: String,
    /// Interface name inside the pod. Default `eth0`.
    pub pod_ifname: String,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            bridge: "crius0".into(),
            subnet: IpNet::new_unchecked(IpAddr::from([10, 88, 0, 0]), 16),
            subnet_v6: None,
            mtu: 1500,
            chain_prefix: "CRIUS".into(),
            veth_prefix: "vc".into(),
            pod_ifname: "eth0".into(),
        }
    }
}

/// An invalid [`BridgeConfig`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A device name is empty, too long or has characters Linux refuses.
    #[error("invalid interface name {0:?}: 1 to 15 characters, no '/', ':' or whitespace")]
    InterfaceName(String),
    /// The IPv4 subnet is not IPv4 or too small.
    #[error("subnet {0} must be an IPv4 network of at most /30")]
    Subnet(IpNet),
    /// The IPv6 subnet is not IPv6 or too small.
    #[error("subnet_v6 {0} must be an IPv6 network of at most /120")]
    SubnetV6(IpNet),
    /// The MTU is out of range.
    #[error("mtu {0} must be between 576 and 65535")]
    Mtu(u32),
    /// A prefix is empty, too long or has characters iptables or Linux refuse.
    #[error("invalid {what} {value:?}: {rule}")]
    Prefix {
        /// Which prefix.
        what: &'static str,
        /// Its value.
        value: String,
        /// What it must be.
        rule: &'static str,
    },
}

fn ifname_ok(n: &str) -> bool {
    !n.is_empty() && n.len() <= 15 && !n.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
}

impl BridgeConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for n in [&self.bridge, &self.pod_ifname] {
            if !ifname_ok(n) {
                return Err(ConfigError::InterfaceName(n.clone()));
            }
        }
        if self.subnet.is_ipv6() || self.subnet.prefix() > 30 {
            return Err(ConfigError::Subnet(self.subnet));
        }
        if let Some(v6) = self.subnet_v6 {
            if !v6.is_ipv6() || v6.prefix() > 120 {
                return Err(ConfigError::SubnetV6(v6));
            }
        }
        if !(576..=65535).contains(&self.mtu) {
            return Err(ConfigError::Mtu(self.mtu));
        }
        let p = &self.chain_prefix;
        if p.is_empty()
            || p.len() > 12
            || !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(ConfigError::Prefix {
                what: "chain_prefix",
                value: p.clone(),
                rule: "1 to 12 of A-Z a-z 0-9 _ -",
            });
        }
        let v = &self.veth_prefix;
        if v.is_empty() || v.len() > 3 || !v.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(ConfigError::Prefix {
                what: "veth_prefix",
                value: v.clone(),
                rule: "1 to 3 of A-Z a-z 0-9",
            });
        }
        Ok(())
    }
}

/// What [`BridgeBackend::reconcile`] repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Leases released because their pod is gone.
    pub leases_released: usize,
    /// Host veths deleted because their pod is gone.
    pub veths_deleted: usize,
    /// Pod chains deleted because their pod is gone (per family).
    pub chains_deleted: usize,
    /// Live pods whose hostPort rules were rewritten.
    pub pods_restored: usize,
}

/// The built-in bridge backend.
pub struct BridgeBackend {
    cfg: BridgeConfig,
    leases: Arc<dyn LeaseStore>,
    rules: Rules,
    /// Host port reservations: (mapping, owning pod).
    ports: Mutex<Vec<(PortMapping, String)>>,
    /// Whether the host side (bridge, sysctls, base chains) was set up by this process.
    host_ready: tokio::sync::Mutex<bool>,
}

impl std::fmt::Debug for BridgeBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeBackend")
            .field("cfg", &self.cfg)
            .finish()
    }
}

fn setup_err(req: &PodNetworkRequest, message: impl Into<String>) -> NetworkError {
    NetworkError::Setup {
        pod_id: req.pod_id.clone(),
        message: message.into(),
    }
}

fn write_sysctl(path: &str, value: &str) -> Result<(), String> {
    let p = Path::new(path);
    if std::fs::read_to_string(p).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    std::fs::write(p, value).map_err(|e| format!("write {path}: {e}"))
}

/// Two mappings clash on the same protocol and port unless both name a host IP and
/// the IPs differ (an unset host IP binds every address).
fn conflicts(a: &PortMapping, b: &PortMapping) -> bool {
    a.protocol == b.protocol
        && a.host_port == b.host_port
        && match (a.host_ip, b.host_ip) {
            (Some(x), Some(y)) => x == y,
            _ => true,
        }
}

fn effective_mappings(req: &PodNetworkRequest) -> Vec<PortMapping> {
    req.port_mappings
        .iter()
        .filter(|m| m.host_port != 0)
        .map(|m| PortMapping {
            host_ip: m.host_ip.filter(|h| !h.is_unspecified()),
            ..*m
        })
        .collect()
}

impl BridgeBackend {
    /// A backend for `cfg` whose leases live in `leases`. Touches nothing on the host
    /// until the first setup or reconcile.
    pub fn new(cfg: BridgeConfig, leases: Arc<dyn LeaseStore>) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let rules = Rules {
            prefix: cfg.chain_prefix.clone(),
            bridge: cfg.bridge.clone(),
        };
        Ok(Self {
            cfg,
            leases,
            rules,
            ports: Mutex::new(Vec::new()),
            host_ready: tokio::sync::Mutex::new(false),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &BridgeConfig {
        &self.cfg
    }

    /// The host-side veth name of a pod: the prefix plus a hash of bridge and pod id.
    pub fn veth_name(&self, pod_id: &str) -> String {
        let h = format!("{:016x}", fnv64(&[&self.cfg.bridge, pod_id]));
        let room = 15 - self.cfg.veth_prefix.len();
        format!("{}{}", self.cfg.veth_prefix, &h[..room.min(h.len())])
    }

    /// The name of the pod's iptables DNAT chain (nat table), present only while the
    /// pod has hostPort mappings.
    pub fn pod_chain(&self, pod_id: &str) -> String {
        self.rules.pod_chain(pod_id)
    }

    fn families(&self) -> Vec<IpNet> {
        std::iter::once(self.cfg.subnet)
            .chain(self.cfg.subnet_v6)
            .collect()
    }

    fn reserve_ports(
        &self,
        req: &PodNetworkRequest,
        maps: &[PortMapping],
    ) -> Result<(), NetworkError> {
        let mut ports = self
            .ports
            .lock()
            .map_err(|_| setup_err(req, "port table lock poisoned"))?;
        for (i, m) in maps.iter().enumerate() {
            if m.container_port == 0 {
                return Err(NetworkError::InvalidRequest {
                    pod_id: req.pod_id.clone(),
                    message: format!(
                        "host port {}/{} maps to container port 0",
                        m.host_port, m.protocol
                    ),
                });
            }
            if maps[..i].iter().any(|o| conflicts(o, m)) {
                return Err(NetworkError::HostPortInUse {
                    pod_id: req.pod_id.clone(),
                    host_port: m.host_port,
                    protocol: m.protocol,
                    owner: format!("pod {} (itself, twice in the request)", req.pod_id),
                });
            }
            if let Some((_, owner)) = ports
                .iter()
                .find(|(o, owner)| *owner != req.pod_id && conflicts(o, m))
            {
                return Err(NetworkError::HostPortInUse {
                    pod_id: req.pod_id.clone(),
                    host_port: m.host_port,
                    protocol: m.protocol,
                    owner: format!("pod {owner}"),
                });
            }
        }
        ports.retain(|(_, owner)| *owner != req.pod_id);
        ports.extend(maps.iter().map(|m| (*m, req.pod_id.clone())));
        Ok(())
    }

    fn release_ports(&self, pod_id: &str) {
        if let Ok(mut ports) = self.ports.lock() {
            ports.retain(|(_, owner)| owner != pod_id);
        }
    }

    /// Makes sure the bridge, its addresses, the sysctls and the base chains exist.
    async fn ensure_host(&self, force: bool) -> Result<u32, String> {
        let mut ready = self.host_ready.lock().await;
        let nl = Netlink::connect()?;
        if *ready && !force {
            if let Some(l) = nl.link(&self.cfg.bridge).await? {
                return Ok(l.header.index);
            }
        }
        let idx = nl.ensure_bridge(&self.cfg.bridge, self.cfg.mtu).await?;
        for net in self.families() {
            let gw = net
                .gateway()
                .ok_or_else(|| format!("subnet {net} has no gateway address"))?;
            nl.ensure_address(idx, gw, net.prefix()).await?;
        }
        write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
        write_sysctl(
            &format!("/proc/sys/net/ipv4/conf/{}/route_localnet", self.cfg.bridge),
            "1",
        )?;
        if self.cfg.subnet_v6.is_some() {
            write_sysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1")?;
        }
        for net in self.families() {
            self.rules.ensure_base(net).await?;
        }
        *ready = true;
        Ok(idx)
    }

    async fn setup_steps(
        &self,
        req: &PodNetworkRequest,
        maps: &[PortMapping],
    ) -> Result<PodNetworkStatus, NetworkError> {
        let bridge_idx = self
            .ensure_host(false)
            .await
            .map_err(|m| setup_err(req, m))?;
        let mut ips = Vec::new();
        for net in self.families() {
            let ip = ipam::allocate(self.leases.as_ref(), &self.cfg.bridge, &req.pod_id, net)
                .map_err(|e| match e {
                    IpamError::Exhausted { .. } => NetworkError::AddressesExhausted {
                        pod_id: req.pod_id.clone(),
                        message: e.to_string(),
                    },
                    IpamError::Store(e @ LeaseStoreError::Full(_)) => NetworkError::DiskFull {
                        pod_id: req.pod_id.clone(),
                        message: e.to_string(),
                    },
                    IpamError::Store(e) => setup_err(req, e.to_string()),
                })?;
            ips.push((ip, net));
        }
        let netns = File::open(&req.netns)
            .map_err(|e| setup_err(req, format!("open netns {}: {e}", req.netns.display())))?;
        let nl = Netlink::connect().map_err(|m| setup_err(req, m))?;
        let host_if = self.veth_name(&req.pod_id);
        // A setup repeated for the same pod starts its link afresh.
        nl.delete_link(&host_if)
            .await
            .map_err(|m| setup_err(req, m))?;
        nl.create_veth(
            &host_if,
            &self.cfg.pod_ifname,
            bridge_idx,
            self.cfg.mtu,
            &netns,
        )
        .await
        .map_err(|m| setup_err(req, m))?;
        drop(netns);
        let addrs: Vec<(IpAddr, u8)> = ips.iter().map(|(ip, n)| (*ip, n.prefix())).collect();
        let gws: Vec<IpAddr> = ips.iter().filter_map(|(_, n)| n.gateway()).collect();
        let ifname = self.cfg.pod_ifname.clone();
        in_netns(&req.netns, move |nl| {
            Box::pin(async move { nl.configure_pod_side(&ifname, &addrs, &gws).await })
        })
        .await
        .map_err(|m| setup_err(req, format!("in pod namespace: {m}")))?;
        for (ip, _) in &ips {
            self.rules
                .add_pod(&req.pod_id, *ip, maps)
                .await
                .map_err(|m| setup_err(req, m))?;
        }
        Ok(PodNetworkStatus {
            ips: ips.into_iter().map(|(ip, _)| ip).collect(),
        })
    }

    /// Every teardown step, each attempted even when an earlier one failed.
    async fn teardown_steps(&self, pod_id: &str, maps: &[PortMapping]) -> Result<(), String> {
        let mut errors = Vec::new();
        for net in self.families() {
            if let Err(e) = self
                .rules
                .remove_pod(IpFamily::of(net.addr()), pod_id, maps)
                .await
            {
                errors.push(e);
            }
        }
        let leases = self.leases.list(&self.cfg.bridge).unwrap_or_default();
        let pod_ips: Vec<IpAddr> = leases
            .iter()
            .filter(|l| l.pod_id == pod_id)
            .map(|l| l.address)
            .collect();
        for m in maps.iter().filter(|m| m.protocol == Protocol::Udp) {
            for ip in &pod_ips {
                let (ip, port) = (*ip, m.container_port);
                match tokio::task::spawn_blocking(move || crate::conntrack::flush_udp_to(ip, port))
                    .await
                {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => errors.push(e),
                    Err(e) => errors.push(format!("conntrack task: {e}")),
                }
            }
        }
        match Netlink::connect() {
            Ok(nl) => {
                if let Err(e) = nl.delete_link(&self.veth_name(pod_id)).await {
                    errors.push(e);
                }
            }
            Err(e) => errors.push(e),
        }
        for net in self.families() {
            if let Err(e) = self.leases.remove(ipam::LeaseKey {
                network: &self.cfg.bridge,
                pod_id,
                family: IpFamily::of(net.addr()),
            }) {
                errors.push(e.to_string());
            }
        }
        self.release_ports(pod_id);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Repairs the host after a restart: `live` is every pod that should have a
    /// network. Leases, veths and iptables chains of any other pod are removed; the
    /// host side is (re)created; the hostPort rules and port reservations of live
    /// pods are rewritten from `live` and their leases.
    pub async fn reconcile(
        &self,
        live: &[PodNetworkRequest],
    ) -> Result<ReconcileReport, NetworkError> {
        let err = |message: String| NetworkError::Setup {
            pod_id: String::new(),
            message: format!("reconcile: {message}"),
        };
        let mut report = ReconcileReport::default();
        let live_ids: HashSet<&str> = live.iter().map(|r| r.pod_id.as_str()).collect();
        let bridge_idx = self.ensure_host(true).await.map_err(err)?;
        let leases = self
            .leases
            .list(&self.cfg.bridge)
            .map_err(|e| err(e.to_string()))?;
        for l in &leases {
            if !live_ids.contains(l.pod_id.as_str()) {
                self.leases
                    .remove(l.key())
                    .map_err(|e| err(e.to_string()))?;
                report.leases_released += 1;
            }
        }
        let nl = Netlink::connect().map_err(err)?;
        let expected: HashSet<String> = live.iter().map(|r| self.veth_name(&r.pod_id)).collect();
        for port in nl.bridge_ports(bridge_idx).await.map_err(err)? {
            let ours = port.starts_with(&self.cfg.veth_prefix)
                && port.len() == 15
                && port[self.cfg.veth_prefix.len()..]
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit());
            if ours && !expected.contains(&port) && nl.delete_link(&port).await.map_err(err)? {
                report.veths_deleted += 1;
            }
        }
        let with_ports: HashMap<String, (&PodNetworkRequest, Vec<PortMapping>)> = live
            .iter()
            .map(|r| (self.rules.pod_chain(&r.pod_id), (r, effective_mappings(r))))
            .filter(|(_, (_, m))| !m.is_empty())
            .collect();
        for net in self.families() {
            let f = IpFamily::of(net.addr());
            for ch in self.rules.pod_chains(f).await.map_err(err)? {
                if !with_ports.contains_key(&ch)
                    && self.rules.remove_chain(f, &ch).await.map_err(err)?
                {
                    report.chains_deleted += 1;
                }
            }
        }
        let leases = self
            .leases
            .list(&self.cfg.bridge)
            .map_err(|e| err(e.to_string()))?;
        {
            let mut ports = self
                .ports
                .lock()
                .map_err(|_| err("port table lock poisoned".into()))?;
            ports.clear();
            for (_, (r, maps)) in with_ports.iter() {
                ports.extend(maps.iter().map(|m| (*m, r.pod_id.clone())));
            }
        }
        for (_, (r, maps)) in with_ports.iter() {
            let mut restored = false;
            for l in leases.iter().filter(|l| l.pod_id == r.pod_id) {
                self.rules
                    .add_pod(&r.pod_id, l.address, maps)
                    .await
                    .map_err(err)?;
                restored = true;
            }
            if restored {
                report.pods_restored += 1;
            }
        }
        Ok(report)
    }

    /// Removes the bridge and every iptables chain of this configuration's prefix.
    /// For uninstall and tests: pods still attached lose their network.
    pub async fn remove_host_network(&self) -> Result<(), NetworkError> {
        let err = |message: String| NetworkError::Teardown {
            pod_id: String::new(),
            message: format!("remove host network: {message}"),
        };
        let mut ready = self.host_ready.lock().await;
        for net in self.families() {
            self.rules
                .remove_base(IpFamily::of(net.addr()))
                .await
                .map_err(err)?;
        }
        let nl = Netlink::connect().map_err(err)?;
        nl.delete_link(&self.cfg.bridge).await.map_err(err)?;
        *ready = false;
        Ok(())
    }
}

impl NetworkBackend for BridgeBackend {
    fn name(&self) -> &'static str {
        "bridge"
    }

    fn status(&self) -> BackendStatus {
        BackendStatus::ready()
    }

    fn setup<'a>(
        &'a self,
        req: &'a PodNetworkRequest,
    ) -> BoxFuture<'a, Result<PodNetworkStatus, NetworkError>> {
        Box::pin(async move {
            let maps = effective_mappings(req);
            self.reserve_ports(req, &maps)?;
            match self.setup_steps(req, &maps).await {
                Ok(s) => Ok(s),
                Err(e) => {
                    if let Err(undo) = self.teardown_steps(&req.pod_id, &maps).await {
                        return Err(setup_err(
                            req,
                            format!("{e}; and undoing it failed: {undo}"),
                        ));
                    }
                    Err(e)
                }
            }
        })
    }

    fn teardown<'a>(
        &'a self,
        req: &'a PodNetworkRequest,
    ) -> BoxFuture<'a, Result<(), NetworkError>> {
        Box::pin(async move {
            self.teardown_steps(&req.pod_id, &effective_mappings(req))
                .await
                .map_err(|message| NetworkError::Teardown {
                    pod_id: req.pod_id.clone(),
                    message,
                })
        })
    }
}
