//! The TOML configuration (crates/cri-server `Config::parse`): any text parses or is
//! refused without a panic; an accepted config prints (`to_toml`, what `criusd
//! config show` prints) and that text parses back to the same config. Validation
//! of an accepted config never panics either.

use crius_cri_server::config::{Config, DEFAULT_CONFIG_TOML};
use crius_fuzz::{Harness, Target};

use super::{PARSE_BOUND, shape, tag};

pub const TARGET: Target = Target {
    name: "config",
    make: || Box::new(Configs),
    dictionary: &[
        b"[images]\n",
        b"[images.mirrors]\n",
        b"[images.credentials.\"r\"]\n",
        b"[network]\n",
        b"[streaming]\n",
        b"[runtimes.x]\n",
        b"state_dir = ",
        b"socket = ",
        b"log_level = ",
        b"cgroup_driver = ",
        b"default_runtime = ",
        b"path = ",
        b"subnet = ",
        b"subnet_v6 = ",
        b"mtu = ",
        b"port = ",
        b"address = ",
        b"pull_attempts = ",
        b"max_layer_bytes = ",
        b"\"docker.io\" = [\"m:5000\"]\n",
        b"\"\"",
        b"\"\\u0000\"",
        b"'''",
        b"[]",
        b"{}",
        b"= ",
        b"\n",
        b"info,crius=debug",
        b"[[",
        b"-9223372036854775808",
        b"18446744073709551615",
        b"1e400",
        b"nan",
        b"inf",
    ],
    max_len: 8192,
    time_bound: PARSE_BOUND,
    ci_iterations: 800,
};

struct Configs;

impl Harness for Configs {
    fn run(&mut self, input: &[u8]) -> u64 {
        let text = String::from_utf8_lossy(input);
        let c = match Config::parse(&text) {
            Ok(c) => c,
            // toml quotes the offending line; its last line says what is wrong.
            Err(message) => return shape(message.lines().last().unwrap_or_default()),
        };
        let printed = match c.to_toml() {
            Ok(t) => t,
            Err(e) => panic!("an accepted config does not print: {e}\n{c:?}"),
        };
        match Config::parse(&printed) {
            Ok(again) => assert_eq!(
                again, c,
                "the printed config parses differently:\n{printed}"
            ),
            Err(e) => panic!("the printed config is refused: {e}\n{printed}"),
        }
        match c.validate() {
            Ok(()) => tag(&["valid"]),
            Err(e) => tag(&["invalid", &shape(&e.to_string()).to_string()]),
        }
    }
}

/// Seeds: the default config (which deploy/config.toml is) and small real ones.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("default", DEFAULT_CONFIG_TOML.as_bytes().to_vec()),
        ("empty", Vec::new()),
        (
            "mirrors-and-credentials",
            b"log_level = \"debug\"\n[images]\npull_attempts = 5\ninsecure_registries = [\"lab:5000\"]\n[images.mirrors]\n\"docker.io\" = [\"mirror.local:5000\"]\n[images.credentials.\"registry.example.com\"]\nusername = \"u\"\npassword = \"p\"\n".to_vec(),
        ),
        (
            "cni-and-tls",
            b"cgroup_driver = \"systemd\"\ndefault_runtime = \"crun\"\n[network]\nbackend = \"cni\"\nsubnet_v6 = \"fd00:88::/64\"\ncni_bin_dirs = [\"/opt/cni/bin\"]\n[streaming]\naddress = \"0.0.0.0\"\nport = 10010\ntls_cert_file = \"/etc/crius/tls.crt\"\ntls_key_file = \"/etc/crius/tls.key\"\n[runtimes.crun]\npath = \"/usr/bin/crun\"\n".to_vec(),
        ),
    ]
}
