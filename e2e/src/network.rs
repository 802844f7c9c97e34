//! The pod network a test daemon owns, and what of it pods can leave behind.
use crate::run_cmd;

/// The pod network a test daemon owns: a unique bridge, subnet and chain prefix.
#[derive(Debug, Clone)]
pub struct TestNetwork {
    pub bridge: String,
    pub subnet: String,
    pub chain_prefix: String,
}

static SUBNETS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b));
    u32::from_le_bytes(b)
}

impl TestNetwork {
    /// Unique names and a /24 that no interface here uses.
    pub fn unique() -> TestNetwork {
        let used = run_cmd("ip", &["-o", "-4", "addr"]).unwrap_or_default();
        let mut taken = SUBNETS.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let r = random_u32();
            let subnet = format!("10.{}.{}.0/24", 200 + (r % 50), (r >> 8) % 256);
            let prefix3 = subnet.trim_end_matches("0/24").to_string();
            if used.contains(&format!(" {prefix3}")) || taken.contains(&subnet) {
                continue;
            }
            taken.push(subnet.clone());
            let tag = format!("{:08x}", random_u32());
            return TestNetwork {
                bridge: format!("ct{tag}"),
                subnet,
                chain_prefix: format!("CT{}", tag.to_uppercase()),
            };
        }
    }

    /// The bridge backend configuration this network corresponds to.
    pub fn bridge_config(&self) -> crius_cni::BridgeConfig {
        crius_cni::BridgeConfig {
            bridge: self.bridge.clone(),
            subnet: self.subnet.parse().expect("subnet"),
            chain_prefix: self.chain_prefix.clone(),
            ..Default::default()
        }
    }

    /// What of this network is left that only pods own: veths on the bridge and
    /// per-pod iptables chains.
    pub fn pod_leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        let veths =
            run_cmd("ip", &["-o", "link", "show", "master", &self.bridge]).unwrap_or_default();
        out.extend(
            veths
                .lines()
                .map(|l| format!("veth on {}: {l}", self.bridge)),
        );
        for table in ["nat", "filter"] {
            let rules = run_cmd("iptables-save", &["-t", table]).unwrap_or_default();
            let base = [
                format!(":{}-HOSTPORTS ", self.chain_prefix),
                format!(":{}-POSTROUTING ", self.chain_prefix),
                format!(":{}-FORWARD ", self.chain_prefix),
            ];
            out.extend(
                rules
                    .lines()
                    .filter(|l| l.starts_with(&format!(":{}-", self.chain_prefix)))
                    .filter(|l| !base.iter().any(|b| l.starts_with(b.as_str())))
                    .map(|l| format!("pod chain in {table}: {l}")),
            );
        }
        out
    }

    /// Removes the bridge and every chain of the prefix, then says what is left.
    pub fn remove(&self) -> Vec<String> {
        let cfg = self.bridge_config();
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let leases: std::sync::Arc<dyn crius_cni::LeaseStore> =
                    std::sync::Arc::new(crius_cni::MemoryLeaseStore::default());
                match crius_cni::BridgeBackend::new(cfg, leases) {
                    Ok(b) => b.remove_host_network().await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            })
        })
        .join();
        let mut out = Vec::new();
        if let Ok(Err(e)) = done {
            out.push(format!("removing the test network: {e}"));
        }
        if run_cmd("ip", &["link", "show", &self.bridge]).is_ok() {
            out.push(format!("bridge {} still exists", self.bridge));
        }
        for table in ["nat", "filter"] {
            let rules = run_cmd("iptables-save", &["-t", table]).unwrap_or_default();
            out.extend(
                rules
                    .lines()
                    .filter(|l| l.contains(&format!("{}-", self.chain_prefix)))
                    .map(|l| format!("{table}: {l}")),
            );
        }
        out
    }
}
