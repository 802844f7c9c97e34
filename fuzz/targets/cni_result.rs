//! CNI results (crates/cni): what a plugin prints on ADD is parsed, the pod's IPs
//! taken from it, and the result cached for DEL; whatever a plugin prints, nothing
//! panics and the cached result comes back unchanged as DEL's `prevResult`.

use crius_fuzz::{Harness, Target};

use super::{IO_BOUND, shape, tag, temp_root};

pub const TARGET: Target = Target {
    name: "cni_result",
    make: || {
        Box::new(Results {
            dir: temp_root("crius-fuzz-cni-"),
        })
    },
    dictionary: &[
        b"\"cniVersion\"",
        b"\"1.0.0\"",
        b"\"0.4.0\"",
        b"\"0.2.0\"",
        b"\"interfaces\"",
        b"\"ips\"",
        b"\"address\"",
        b"\"gateway\"",
        b"\"interface\"",
        b"\"ip4\"",
        b"\"ip6\"",
        b"\"ip\"",
        b"\"routes\"",
        b"\"dst\"",
        b"\"dns\"",
        b"\"nameservers\"",
        b"\"10.88.0.5/16\"",
        b"\"fd00::5/64\"",
        b"\"::ffff:10.0.0.1/96\"",
        b"\"fe80::1%eth0/64\"",
        b"/",
        b"null",
        b"[]",
        b"{}",
        b"1e999",
        b"\"\\ud800\"",
    ],
    max_len: 4096,
    time_bound: IO_BOUND,
    ci_iterations: 1500,
};

struct Results {
    dir: tempfile::TempDir,
}

impl Harness for Results {
    fn run(&mut self, input: &[u8]) -> u64 {
        match crius_cni::fuzzing::add_result(input, self.dir.path()) {
            Ok(ips) => tag(&["ok", &ips.len().min(3).to_string()]),
            Err(e) => shape(&e),
        }
    }
}

/// Seeds: results as the reference plugins print them (bridge with host-local IPAM,
/// a dual-stack result, an old 0.2.0 one).
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "bridge-1.0.0",
            br#"{
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "cni0", "mac": "6a:1c:2e:4b:aa:01"},
        {"name": "veth5b1c8a3e", "mac": "b2:9d:41:0c:7e:12"},
        {"name": "eth0", "mac": "3e:55:17:c0:de:42", "sandbox": "/run/crius/pods/4f2a/ns/net"}
    ],
    "ips": [
        {"interface": 2, "address": "10.88.0.7/16", "gateway": "10.88.0.1"}
    ],
    "routes": [{"dst": "0.0.0.0/0"}],
    "dns": {}
}"#
            .to_vec(),
        ),
        (
            "dual-stack-0.4.0",
            br#"{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/x"}],"ips":[{"version":"4","interface":0,"address":"10.244.1.9/24","gateway":"10.244.1.1"},{"version":"6","interface":0,"address":"fd00:10:244:1::9/64","gateway":"fd00:10:244:1::1"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.244.1.1"},{"dst":"::/0"}],"dns":{"nameservers":["10.96.0.10"],"search":["default.svc.cluster.local"]}}"#
                .to_vec(),
        ),
        (
            "old-0.2.0",
            br#"{"cniVersion":"0.2.0","ip4":{"ip":"10.1.0.3/24","gateway":"10.1.0.1","routes":[{"dst":"0.0.0.0/0"}]},"dns":{}}"#
                .to_vec(),
        ),
        (
            "plugin-error",
            br#"{"cniVersion":"1.0.0","code":7,"msg":"failed to allocate for range 0","details":"no IP addresses available in range set: 10.88.0.1-10.88.255.254"}"#
                .to_vec(),
        ),
    ]
}
