//! NAT and forwarding rules through `iptables-restore --noflush` / `ip6tables-restore`.
//!
//! Every chain crius touches is its own, named from a configurable prefix `P`:
//! - nat `P-HOSTPORTS`, jumped to from PREROUTING and OUTPUT for local destinations;
//!   it holds one jump per pod with host ports, to the pod's chain `P-<12 hex>`
//!   (a hash of the pod id) that holds the pod's DNAT rules;
//! - nat `P-POSTROUTING`, jumped to from POSTROUTING: masquerade for pod egress,
//!   for DNATed traffic from the pod subnet back into it (hairpin, pod to hostPort)
//!   and for localhost-originated DNAT (IPv4 only, with `route_localnet` on the bridge);
//! - filter `P-FORWARD`, inserted first in FORWARD: accept to and from the bridge.
//!
//! Only crius's own jump rules are ever deleted from built-in chains, by their exact
//! text as `iptables-save` prints it; no shared chain is flushed.

use std::net::IpAddr;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use crate::cidr::IpNet;
use crate::ipam::{IpFamily, fnv64};
use crate::{PortMapping, Protocol};

fn bins(f: IpFamily) -> (&'static str, &'static str) {
    match f {
        IpFamily::V4 => ("iptables-save", "iptables-restore"),
        IpFamily::V6 => ("ip6tables-save", "ip6tables-restore"),
    }
}

async fn run(bin: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("run {bin}: {e}"))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .await
            .map_err(|e| format!("write to {bin}: {e}"))?;
        drop(pipe);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .map_err(|_| format!("{bin} timed out"))?
        .map_err(|e| format!("wait for {bin}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{bin} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            stdin
                .map(|s| format!("\ninput was:\n{s}"))
                .unwrap_or_default()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `iptables-save -t table` for the family.
pub(crate) async fn save(f: IpFamily, table: &str) -> Result<String, String> {
    run(bins(f).0, &["-t", table], None).await
}

async fn restore(f: IpFamily, script: &str) -> Result<(), String> {
    run(bins(f).1, &["-w", "5", "--noflush"], Some(script))
        .await
        .map(|_| ())
}

fn has_chain(saved: &str, chain: &str) -> bool {
    let decl = format!(":{chain} ");
    saved.lines().any(|l| l.starts_with(&decl))
}

fn jumps<'a>(saved: &'a str, from: &str, to: &str) -> Vec<&'a str> {
    let start = format!("-A {from} ");
    let end = format!(" -j {to}");
    saved
        .lines()
        .filter(|l| l.starts_with(&start) && l.ends_with(&end))
        .collect()
}

fn comment_safe(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | ' '))
        .take(200)
        .collect()
}

/// The rule set of one bridge network.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    pub(crate) prefix: String,
    pub(crate) bridge: String,
}

impl Rules {
    fn hostports(&self) -> String {
        format!("{}-HOSTPORTS", self.prefix)
    }
    fn postrouting(&self) -> String {
        format!("{}-POSTROUTING", self.prefix)
    }
    fn forward(&self) -> String {
        format!("{}-FORWARD", self.prefix)
    }

    /// The name of the pod's DNAT chain.
    pub(crate) fn pod_chain(&self, pod_id: &str) -> String {
        format!(
            "{}-{:012x}",
            self.prefix,
            fnv64(&[pod_id]) & 0xffff_ffff_ffff
        )
    }

    fn is_pod_chain(&self, chain: &str) -> bool {
        chain
            .strip_prefix(&self.prefix)
            .and_then(|r| r.strip_prefix('-'))
            .is_some_and(|h| h.len() == 12 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    }

    /// Creates the base chains and jumps for `subnet`'s family; idempotent.
    pub(crate) async fn ensure_base(&self, subnet: IpNet) -> Result<(), String> {
        let f = IpFamily::of(subnet.addr());
        let nat = save(f, "nat").await?;
        let filter = save(f, "filter").await?;
        let (hp, post, fwd, br) = (
            self.hostports(),
            self.postrouting(),
            self.forward(),
            &self.bridge,
        );
        let tag = comment_safe(&format!("crius {}", self.prefix));
        let mut s = String::from("*nat\n");
        if !has_chain(&nat, &hp) {
            s += &format!(":{hp} - [0:0]\n");
        }
        s += &format!(":{post} - [0:0]\n");
        if f == IpFamily::V4 {
            s += &format!("-A {post} -s 127.0.0.0/8 -o {br} -j MASQUERADE\n");
        }
        s += &format!(
            "-A {post} -s {subnet} -d {subnet} -m conntrack --ctstate DNAT -j MASQUERADE\n"
        );
        s += &format!("-A {post} -s {subnet} ! -d {subnet} -j MASQUERADE\n");
        for from in ["PREROUTING", "OUTPUT"] {
            if jumps(&nat, from, &hp).is_empty() {
                s += &format!(
                    "-A {from} -m addrtype --dst-type LOCAL -m comment --comment \"{tag}\" -j {hp}\n"
                );
            }
        }
        if jumps(&nat, "POSTROUTING", &post).is_empty() {
            s += &format!("-A POSTROUTING -m comment --comment \"{tag}\" -j {post}\n");
        }
        s += "COMMIT\n*filter\n";
        s += &format!(":{fwd} - [0:0]\n-A {fwd} -i {br} -j ACCEPT\n-A {fwd} -o {br} -j ACCEPT\n");
        if jumps(&filter, "FORWARD", &fwd).is_empty() {
            s += &format!("-I FORWARD 1 -m comment --comment \"{tag}\" -j {fwd}\n");
        }
        s += "COMMIT\n";
        restore(f, &s).await
    }

    /// Removes the base chains, their jumps and any pod chain of this prefix.
    pub(crate) async fn remove_base(&self, f: IpFamily) -> Result<(), String> {
        let nat = save(f, "nat").await?;
        let filter = save(f, "filter").await?;
        let (hp, post, fwd) = (self.hostports(), self.postrouting(), self.forward());
        let mut s = String::from("*nat\n");
        for (from, to) in [("PREROUTING", &hp), ("OUTPUT", &hp), ("POSTROUTING", &post)] {
            for l in jumps(&nat, from, to) {
                s += &format!("-D{}\n", &l[2..]);
            }
        }
        for c in [&hp, &post] {
            if has_chain(&nat, c) {
                s += &format!("-F {c}\n");
            }
        }
        for c in self.chains_in(&nat) {
            s += &format!("-F {c}\n-X {c}\n");
        }
        for c in [&hp, &post] {
            if has_chain(&nat, c) {
                s += &format!("-X {c}\n");
            }
        }
        s += "COMMIT\n*filter\n";
        for l in jumps(&filter, "FORWARD", &fwd) {
            s += &format!("-D{}\n", &l[2..]);
        }
        if has_chain(&filter, &fwd) {
            s += &format!("-F {fwd}\n-X {fwd}\n");
        }
        s += "COMMIT\n";
        restore(f, &s).await
    }

    fn chains_in(&self, nat: &str) -> Vec<String> {
        nat.lines()
            .filter_map(|l| l.strip_prefix(':'))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|c| self.is_pod_chain(c))
            .map(str::to_string)
            .collect()
    }

    /// The pod chains present for the family.
    pub(crate) async fn pod_chains(&self, f: IpFamily) -> Result<Vec<String>, String> {
        Ok(self.chains_in(&save(f, "nat").await?))
    }

    /// Writes the pod's DNAT chain (replacing its content) and the jump to it.
    /// Mappings whose host IP is of the other family are left out.
    pub(crate) async fn add_pod(
        &self,
        pod_id: &str,
        ip: IpAddr,
        mappings: &[PortMapping],
    ) -> Result<(), String> {
        let f = IpFamily::of(ip);
        if !mappings.iter().any(|m| in_family(m, f)) {
            return Ok(());
        }
        let nat = save(f, "nat").await?;
        match self.pod_script(&nat, pod_id, ip, mappings) {
            Some(s) => restore(f, &s).await,
            None => Ok(()),
        }
    }

    /// The restore script for [`Rules::add_pod`], given the current nat table.
    fn pod_script(
        &self,
        nat: &str,
        pod_id: &str,
        ip: IpAddr,
        mappings: &[PortMapping],
    ) -> Option<String> {
        let f = IpFamily::of(ip);
        let ours: Vec<&PortMapping> = mappings.iter().filter(|m| in_family(m, f)).collect();
        if ours.is_empty() {
            return None;
        }
        let ch = self.pod_chain(pod_id);
        let hp = self.hostports();
        let mut s = format!("*nat\n:{ch} - [0:0]\n");
        for m in ours {
            let p = match m.protocol {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
                Protocol::Sctp => "sctp",
            };
            let dst = m.host_ip.map(|h| format!(" -d {h}")).unwrap_or_default();
            let to = match ip {
                IpAddr::V4(a) => format!("{a}:{}", m.container_port),
                IpAddr::V6(a) => format!("[{a}]:{}", m.container_port),
            };
            s += &format!(
                "-A {ch}{dst} -p {p} -m {p} --dport {} -j DNAT --to-destination {to}\n",
                m.host_port
            );
        }
        if jumps(nat, &hp, &ch).is_empty() {
            s += &format!(
                "-A {hp} -m comment --comment \"{}\" -j {ch}\n",
                comment_safe(&format!("crius pod {pod_id}"))
            );
        }
        s += "COMMIT\n";
        Some(s)
    }

    /// Removes the pod's jump and chain; `Ok(false)` when there was nothing. A pod
    /// without `mappings` of the family never had a chain ([`Rules::add_pod`] makes
    /// none), so the table is not even read; what a crash may have left of another
    /// pod's chain is the restart's reconcile to remove.
    pub(crate) async fn remove_pod(
        &self,
        f: IpFamily,
        pod_id: &str,
        mappings: &[PortMapping],
    ) -> Result<bool, String> {
        if !mappings.iter().any(|m| in_family(m, f)) {
            return Ok(false);
        }
        self.remove_chain(f, &self.pod_chain(pod_id)).await
    }

    /// Removes a pod chain by name and the jumps to it.
    pub(crate) async fn remove_chain(&self, f: IpFamily, ch: &str) -> Result<bool, String> {
        let nat = save(f, "nat").await?;
        match self.remove_chain_script(&nat, ch) {
            Some(s) => restore(f, &s).await.map(|()| true),
            None => Ok(false),
        }
    }

    /// The restore script removing `ch` and the jumps to it; None when neither exists.
    fn remove_chain_script(&self, nat: &str, ch: &str) -> Option<String> {
        let js = jumps(nat, &self.hostports(), ch);
        let exists = has_chain(nat, ch);
        if js.is_empty() && !exists {
            return None;
        }
        let mut s = String::from("*nat\n");
        for l in js {
            s += &format!("-D{}\n", &l[2..]);
        }
        if exists {
            s += &format!("-F {ch}\n-X {ch}\n");
        }
        s += "COMMIT\n";
        Some(s)
    }
}

fn in_family(m: &PortMapping, f: IpFamily) -> bool {
    m.host_ip.is_none_or(|h| IpFamily::of(h) == f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            prefix: "CX".into(),
            bridge: "crx".into(),
        }
    }

    fn map(protocol: Protocol, host_port: u16, host_ip: Option<&str>) -> PortMapping {
        PortMapping {
            protocol,
            container_port: 80,
            host_port,
            host_ip: host_ip.map(|h| h.parse().unwrap()),
        }
    }

    #[test]
    fn pod_script_per_family_and_protocol() {
        let r = rules();
        let ch = r.pod_chain("pod1");
        assert!(r.is_pod_chain(&ch) && !r.is_pod_chain("CX-HOSTPORTS"));
        let maps = [
            map(Protocol::Tcp, 8080, None),
            map(Protocol::Sctp, 9000, Some("192.0.2.9")),
            map(Protocol::Udp, 53, Some("fd00::9")),
        ];
        let v4 = r
            .pod_script("", "pod1", "10.1.0.5".parse().unwrap(), &maps)
            .unwrap();
        assert!(v4.contains(&format!(":{ch} - [0:0]")));
        assert!(v4.contains("-p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.1.0.5:80"));
        assert!(v4.contains(" -d 192.0.2.9 -p sctp -m sctp --dport 9000"));
        assert!(
            !v4.contains("udp"),
            "an IPv6 host IP stays out of IPv4 rules"
        );
        assert!(v4.contains(&format!(
            "-A CX-HOSTPORTS -m comment --comment \"crius pod pod1\" -j {ch}"
        )));
        let v6 = r
            .pod_script("", "pod1", "fd00::5".parse().unwrap(), &maps)
            .unwrap();
        assert!(v6.contains("--to-destination [fd00::5]:80") && !v6.contains("sctp"));
        // An existing jump is not added twice.
        let saved = format!("-A CX-HOSTPORTS -m comment --comment \"crius pod pod1\" -j {ch}\n");
        let again = r
            .pod_script(&saved, "pod1", "10.1.0.5".parse().unwrap(), &maps)
            .unwrap();
        assert!(!again.contains("-A CX-HOSTPORTS"));
        assert!(
            r.pod_script("", "pod1", "10.1.0.5".parse().unwrap(), &[])
                .is_none()
        );
    }

    #[test]
    fn remove_script_deletes_exactly_the_pods_rules() {
        let r = rules();
        let ch = r.pod_chain("pod1");
        let other = r.pod_chain("pod2");
        let saved = format!(
            ":PREROUTING ACCEPT [0:0]\n:{ch} - [0:0]\n:{other} - [0:0]\n\
             -A CX-HOSTPORTS -m comment --comment \"crius pod pod1\" -j {ch}\n\
             -A CX-HOSTPORTS -m comment --comment \"crius pod pod2\" -j {other}\n"
        );
        let s = r.remove_chain_script(&saved, &ch).unwrap();
        assert_eq!(
            s,
            format!(
                "*nat\n-D CX-HOSTPORTS -m comment --comment \"crius pod pod1\" -j {ch}\n-F {ch}\n-X {ch}\nCOMMIT\n"
            )
        );
        assert!(!s.contains(&other));
        assert!(
            r.remove_chain_script(":PREROUTING ACCEPT [0:0]\n", &ch)
                .is_none()
        );
        assert_eq!(r.chains_in(&saved), vec![ch, other]);
    }
}
