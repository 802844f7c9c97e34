//! Links, addresses and routes through rtnetlink.
//!
//! Namespace invariant: the daemon's tokio worker threads always stay in the host
//! network namespace. Work inside a pod's namespace runs in [`in_netns`] on a fresh
//! `std::thread` that calls `setns(2)` on itself, does the work on its own
//! current-thread runtime (so its netlink socket is opened inside the pod's
//! namespace) and then exits; no thread ever returns to a pool from another
//! namespace.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkMessage};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth,
    RouteMessageBuilder,
};

const ENODEV: i32 = 19;
const EEXIST: i32 = 17;

/// A netlink route connection in the namespace of the thread that opened it.
pub(crate) struct Netlink {
    handle: Handle,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn errno(e: &rtnetlink::Error) -> i32 {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.raw_code().abs(),
        _ => 0,
    }
}

fn msg(what: &str, e: rtnetlink::Error) -> String {
    format!("{what}: {e}")
}

fn attr_name(m: &LinkMessage) -> Option<&str> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

fn attr_controller(m: &LinkMessage) -> Option<u32> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(c) => Some(*c),
        _ => None,
    })
}

impl Netlink {
    /// Opens a connection in the current thread's network namespace. Must be called
    /// inside a tokio runtime with IO enabled.
    pub(crate) fn connect() -> Result<Self, String> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| format!("netlink socket: {e}"))?;
        let task = tokio::spawn(conn);
        Ok(Self { handle, task })
    }

    /// The link called `name`, if any.
    pub(crate) async fn link(&self, name: &str) -> Result<Option<LinkMessage>, String> {
        let mut s = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match s.try_next().await {
            Ok(m) => Ok(m),
            Err(e) if errno(&e) == ENODEV => Ok(None),
            Err(e) => Err(msg(&format!("get link {name}"), e)),
        }
    }

    async fn index(&self, name: &str) -> Result<u32, String> {
        self.link(name)
            .await?
            .map(|m| m.header.index)
            .ok_or_else(|| format!("link {name} not found"))
    }

    /// Brings the link with index `idx` (called `name`) up.
    async fn set_up(&self, idx: u32, name: &str) -> Result<(), String> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(idx).up().build())
            .execute()
            .await
            .map_err(|e| msg(&format!("set {name} up"), e))
    }

    /// Creates the bridge unless present, sets its MTU and brings it up. Returns its index.
    pub(crate) async fn ensure_bridge(&self, name: &str, mtu: u32) -> Result<u32, String> {
        if self.link(name).await?.is_none() {
            let add = self
                .handle
                .link()
                .add(LinkBridge::new(name).mtu(mtu).build())
                .execute()
                .await;
            match add {
                Ok(()) => {}
                Err(e) if errno(&e) == EEXIST => {}
                Err(e) => return Err(msg(&format!("create bridge {name}"), e)),
            }
        }
        let idx = self.index(name).await?;
        self.set_up(idx, name).await?;
        Ok(idx)
    }

    /// Adds `ip/prefix` to the link unless already there (IPv6 without DAD).
    pub(crate) async fn ensure_address(
        &self,
        idx: u32,
        ip: IpAddr,
        prefix: u8,
    ) -> Result<(), String> {
        let mut s = self
            .handle
            .address()
            .get()
            .set_link_index_filter(idx)
            .execute();
        while let Some(m) = s.try_next().await.map_err(|e| msg("list addresses", e))? {
            let has = m.attributes.iter().any(|a| {
                matches!(a, AddressAttribute::Address(x) | AddressAttribute::Local(x) if *x == ip)
            });
            if has {
                return Ok(());
            }
        }
        let mut req = self.handle.address().add(idx, ip, prefix);
        if ip.is_ipv6() {
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == EEXIST => Ok(()),
            Err(e) => Err(msg(&format!("add address {ip}/{prefix}"), e)),
        }
    }

    /// Creates a veth pair in one message: `host` on the bridge and up, its peer
    /// `pod_if` directly inside the namespace `netns`.
    pub(crate) async fn create_veth(
        &self,
        host: &str,
        pod_if: &str,
        bridge_idx: u32,
        mtu: u32,
        netns: &File,
    ) -> Result<(), String> {
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(pod_if.to_string())
            .mtu(mtu)
            .setns_by_fd(netns.as_raw_fd())
            .build();
        let msg_ = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(host.to_string())
            .mtu(mtu)
            .controller(bridge_idx)
            .up()
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        self.handle
            .link()
            .add(msg_)
            .execute()
            .await
            .map_err(|e| msg(&format!("create veth {host}"), e))?;
        // Hairpin: with br_netfilter, a pod's packet DNATed back to itself is bridged
        // out of the port it came in by.
        let idx = self.index(host).await?;
        self.handle
            .link()
            .set_port(LinkBridgePort::new(idx).hairpin(true).build())
            .execute()
            .await
            .map_err(|e| msg(&format!("set hairpin on {host}"), e))
    }

    /// Deletes the link called `name`; `Ok(false)` when there was none.
    pub(crate) async fn delete_link(&self, name: &str) -> Result<bool, String> {
        let Some(m) = self.link(name).await? else {
            return Ok(false);
        };
        match self.handle.link().del(m.header.index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == ENODEV => Ok(false),
            Err(e) => Err(msg(&format!("delete link {name}"), e)),
        }
    }

    /// The names of the links enslaved to the bridge with index `bridge_idx`.
    pub(crate) async fn bridge_ports(&self, bridge_idx: u32) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        let mut s = self.handle.link().get().execute();
        while let Some(m) = s.try_next().await.map_err(|e| msg("list links", e))? {
            if attr_controller(&m) == Some(bridge_idx) {
                if let Some(n) = attr_name(&m) {
                    out.push(n.to_string());
                }
            }
        }
        Ok(out)
    }

    /// Inside a pod namespace: `lo` up, addresses on `ifname`, `ifname` up, default
    /// routes via the gateways.
    pub(crate) async fn configure_pod_side(
        &self,
        ifname: &str,
        addrs: &[(IpAddr, u8)],
        gateways: &[IpAddr],
    ) -> Result<(), String> {
        let lo = self.index("lo").await?;
        self.set_up(lo, "lo").await?;
        let idx = self.index(ifname).await?;
        for (ip, prefix) in addrs {
            self.ensure_address(idx, *ip, *prefix).await?;
        }
        self.set_up(idx, ifname).await?;
        for gw in gateways {
            let req = match gw {
                IpAddr::V4(g) => self.handle.route().add(
                    RouteMessageBuilder::<Ipv4Addr>::new()
                        .gateway(*g)
                        .output_interface(idx)
                        .build(),
                ),
                IpAddr::V6(g) => self.handle.route().add(
                    RouteMessageBuilder::<Ipv6Addr>::new()
                        .gateway(*g)
                        .output_interface(idx)
                        .build(),
                ),
            };
            match req.execute().await {
                Ok(()) => {}
                Err(e) if errno(&e) == EEXIST => {}
                Err(e) => return Err(msg(&format!("add default route via {gw}"), e)),
            }
        }
        Ok(())
    }
}

/// Runs `f` with a netlink connection inside the network namespace pinned at
/// `netns`, on a dedicated thread that exits afterwards (see the module invariant).
pub(crate) async fn in_netns<T, F>(netns: &Path, f: F) -> Result<T, String>
where
    T: Send + 'static,
    F: for<'a> FnOnce(&'a Netlink) -> crate::BoxFuture<'a, Result<T, String>> + Send + 'static,
{
    let file = File::open(netns).map_err(|e| format!("open netns {}: {e}", netns.display()))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("crius-netns".into())
        .spawn(move || {
            let run = || -> Result<T, String> {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("setns: {e}"))?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("runtime: {e}"))?;
                rt.block_on(async {
                    let nl = Netlink::connect()?;
                    f(&nl).await
                })
            };
            let _ = tx.send(run());
        })
        .map_err(|e| format!("spawn netns thread: {e}"))?;
    rx.await
        .map_err(|_| "netns thread ended without an answer".to_string())?
}
