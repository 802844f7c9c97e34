//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`; not an API):
//! what the CNI executor reads from plugins, with its invariants checked by
//! assertions. A panic here is a finding.

use std::net::IpAddr;
use std::path::Path;

use serde_json::Value;

use super::{CacheEntry, CniBackend, CniConfig, result_ips};

/// Handles a plugin's ADD output as the executor does: parses the result, takes the
/// pod's IPs from it, caches it for DEL and reads the cache back as DEL does, and
/// builds the DEL stdin that carries it as `prevResult`. The cached result must come
/// back unchanged, and every IP must come from an address of the result. Returns the
/// IPs, or why the output is not a result.
pub fn add_result(stdout: &[u8], cache_dir: &Path) -> Result<Vec<IpAddr>, String> {
    let result: Value = serde_json::from_slice(stdout).map_err(|e| e.to_string())?;
    let ips = result_ips(&result);
    let addresses = result
        .get("ips")
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
        + 2;
    assert!(
        ips.len() <= addresses,
        "{} IPs from {addresses} addresses",
        ips.len()
    );
    let backend = CniBackend::new(CniConfig {
        cache_dir: cache_dir.to_path_buf(),
        ..CniConfig::default()
    });
    let pod = "fuzzpod";
    let config = serde_json::json!({"cniVersion": "1.0.0", "name": "fuzznet", "plugins": [{"type": "bridge"}]});
    let entry = CacheEntry {
        kind: "cniCacheV1".into(),
        container_id: pod.into(),
        if_name: backend.config().ifname.clone(),
        network_name: "fuzznet".into(),
        cni_args: String::new(),
        config,
        result: result.clone(),
    };
    backend.write_cache("fuzznet", pod, &entry)?;
    let cached = backend.cached(pod);
    assert_eq!(cached.len(), 1, "the cached result is not found again");
    let (path, back) = &cached[0];
    assert_eq!(back.result, result, "the result changes through the cache");
    let list = backend.list_from_cache(back);
    for p in &list.plugins {
        let stdin = CniBackend::plugin_stdin(
            &list.name,
            &list.version,
            p,
            Some(&back.result),
            &Default::default(),
        );
        assert_eq!(stdin.get("prevResult"), Some(&result));
    }
    std::fs::remove_file(path).map_err(|e| e.to_string())?;
    Ok(ips)
}
