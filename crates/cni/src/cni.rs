//! The CNI plugin executor (CNI spec 0.3.0 – 1.0.0).
//!
//! The network config is the first file of `conf_dir` (in name order) ending in
//! `.conflist`, `.conf` or `.json` that parses and whose plugins are all found in
//! `bin_dirs`. The directory is re-read on every `status`, `setup`, `teardown` and
//! `check` (it is a handful of small files), so a config added or changed later is
//! used by the next pod without a restart.
//!
//! ADD runs the chain in order, each plugin getting the previous result as
//! `prevResult`; on a failure the chain is deleted again (in reverse) and the error
//! carries the plugin's own `msg` and `details`. The final result and the exact config
//! used are cached under `cache_dir/results/<network>-<container id>-<ifname>`, so DEL
//! (reverse order, with the cached result as `prevResult` for 0.4.0+) uses what ADD
//! used, even after a restart or after the config directory changed. DEL without a
//! cache entry runs with the current config; without any config it succeeds with
//! nothing to do. The cache entry is removed only when DEL succeeded.
//!
//! Every plugin call has a timeout; the plugin process is killed when it expires.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::{
    BackendStatus, BoxFuture, NetworkBackend, NetworkError, PodNetworkRequest, PodNetworkStatus,
    Protocol,
};

/// Configuration of the CNI executor (`[network.cni]` in criusd's config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CniConfig {
    /// Where network configs are looked for. Default `/etc/cni/net.d`.
    pub conf_dir: PathBuf,
    /// Where plugin binaries are looked for, in order (passed as `CNI_PATH`).
    /// Default `/opt/cni/bin`, `/usr/lib/cni`.
    pub bin_dirs: Vec<PathBuf>,
    /// Where ADD results are cached for DEL. Default `/var/lib/crius/cni`.
    pub cache_dir: PathBuf,
    /// Timeout of one plugin call, in seconds. Default 60.
    pub plugin_timeout_secs: u64,
    /// Interface name inside the pod (`CNI_IFNAME`). Default `eth0`.
    pub ifname: String,
}

impl Default for CniConfig {
    fn default() -> Self {
        Self {
            conf_dir: "/etc/cni/net.d".into(),
            bin_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
            cache_dir: "/var/lib/crius/cni".into(),
            plugin_timeout_secs: 60,
            ifname: "eth0".into(),
        }
    }
}

#[cfg(feature = "fuzzing")]
pub mod fuzzing;

/// A loaded network config list.
#[derive(Debug, Clone)]
struct NetworkList {
    name: String,
    version: String,
    plugins: Vec<Value>,
    /// The whole list, as cached for DEL.
    raw: Value,
    file: PathBuf,
}

/// The cache entry of one ADD.
#[derive(Debug, Serialize, Deserialize)]
struct CacheEntry {
    kind: String,
    #[serde(rename = "containerId")]
    container_id: String,
    #[serde(rename = "ifName")]
    if_name: String,
    #[serde(rename = "networkName")]
    network_name: String,
    #[serde(rename = "cniArgs")]
    cni_args: String,
    config: Value,
    result: Value,
}

fn version_tuple(v: &str) -> (u32, u32, u32) {
    let mut it = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    )
}

fn plugin_type(p: &Value) -> Option<&str> {
    p.get("type").and_then(Value::as_str)
}

fn safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s != "."
        && s != ".."
}

/// The pod's IPs in a CNI result (1.0/0.4/0.3 `ips`, or 0.2 `ip4`/`ip6`).
fn result_ips(result: &Value) -> Vec<IpAddr> {
    let parse = |s: &str| s.split('/').next().and_then(|a| a.parse::<IpAddr>().ok());
    let mut ips: Vec<IpAddr> = result
        .get("ips")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|ip| ip.get("address").and_then(Value::as_str))
                .filter_map(parse)
                .collect()
        })
        .unwrap_or_default();
    for k in ["ip4", "ip6"] {
        if let Some(ip) = result
            .get(k)
            .and_then(|v| v.get("ip"))
            .and_then(Value::as_str)
            .and_then(parse)
        {
            ips.push(ip);
        }
    }
    ips
}

/// The CNI plugin executor backend.
#[derive(Debug)]
pub struct CniBackend {
    cfg: CniConfig,
}

/// One plugin call.
struct Call<'a> {
    command: &'a str,
    req: &'a PodNetworkRequest,
    cni_args: String,
    netns: &'a Path,
}

impl<'a> Call<'a> {
    /// `command` (ADD, DEL, CHECK) for `req`'s pod in its network namespace.
    fn pod(command: &'a str, req: &'a PodNetworkRequest) -> Self {
        Self {
            command,
            req,
            cni_args: CniBackend::cni_args(req),
            netns: &req.netns,
        }
    }
}

impl CniBackend {
    /// An executor for `cfg`. Nothing is read until the first call.
    pub fn new(cfg: CniConfig) -> Self {
        Self { cfg }
    }

    /// The configuration in force.
    pub fn config(&self) -> &CniConfig {
        &self.cfg
    }

    fn find_plugin(&self, ty: &str) -> Option<PathBuf> {
        if !safe_name(ty) {
            return None;
        }
        self.cfg
            .bin_dirs
            .iter()
            .map(|d| d.join(ty))
            .find(|p| p.is_file())
    }

    /// Parses one config file into a list; `Err` says why it is unusable.
    fn parse_file(&self, path: &Path) -> Result<NetworkList, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{}: invalid JSON: {e}", path.display()))?;
        let is_list = path.extension().is_some_and(|e| e == "conflist");
        let raw = if is_list || v.get("plugins").is_some() {
            v
        } else {
            let mut plugin = v.clone();
            if let Some(o) = plugin.as_object_mut() {
                o.remove("name");
                o.remove("cniVersion");
            }
            json!({
                "cniVersion": v.get("cniVersion").cloned().unwrap_or(json!("0.2.0")),
                "name": v.get("name").cloned().unwrap_or(Value::Null),
                "plugins": [plugin],
            })
        };
        let name = raw
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| safe_name(n))
            .ok_or_else(|| format!("{}: missing or invalid \"name\"", path.display()))?
            .to_string();
        let version = raw
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or("0.2.0")
            .to_string();
        let plugins = raw
            .get("plugins")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if plugins.is_empty() {
            return Err(format!("{}: no plugins", path.display()));
        }
        for p in &plugins {
            let ty = plugin_type(p)
                .ok_or_else(|| format!("{}: a plugin has no \"type\"", path.display()))?;
            if self.find_plugin(ty).is_none() {
                return Err(format!(
                    "{}: plugin {ty:?} not found in {:?}",
                    path.display(),
                    self.cfg.bin_dirs
                ));
            }
        }
        Ok(NetworkList {
            name,
            version,
            plugins,
            raw,
            file: path.to_path_buf(),
        })
    }

    /// The network config in force, or why there is none.
    fn load(&self) -> Result<NetworkList, String> {
        let dir = &self.cfg.conf_dir;
        let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.extension()
                        .is_some_and(|e| e == "conflist" || e == "conf" || e == "json")
                })
                .collect(),
            Err(e) => return Err(format!("no network config: {}: {e}", dir.display())),
        };
        files.sort();
        let mut problems = Vec::new();
        for f in files {
            match self.parse_file(&f) {
                Ok(l) => return Ok(l),
                Err(e) => problems.push(e),
            }
        }
        if problems.is_empty() {
            Err(format!("no network config found in {}", dir.display()))
        } else {
            Err(format!(
                "no usable network config in {}: {}",
                dir.display(),
                problems.join("; ")
            ))
        }
    }

    fn cache_path(&self, network: &str, container_id: &str) -> PathBuf {
        self.cfg
            .cache_dir
            .join("results")
            .join(format!("{network}-{container_id}-{}", self.cfg.ifname))
    }

    fn cni_args(req: &PodNetworkRequest) -> String {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            req.namespace, req.name, req.pod_id, req.uid
        )
    }

    /// The runtimeConfig entries this plugin declared capabilities for.
    fn runtime_config(plugin: &Value, req: &PodNetworkRequest) -> Option<Value> {
        let caps = plugin.get("capabilities")?.as_object()?;
        let wants = |k: &str| caps.get(k).and_then(Value::as_bool).unwrap_or(false);
        let mut rc = serde_json::Map::new();
        if wants("portMappings") {
            let maps: Vec<Value> = req
                .port_mappings
                .iter()
                .filter(|m| m.host_port != 0)
                .map(|m| {
                    let mut o = json!({
                        "hostPort": m.host_port,
                        "containerPort": m.container_port,
                        "protocol": match m.protocol {
                            Protocol::Tcp => "tcp",
                            Protocol::Udp => "udp",
                            Protocol::Sctp => "sctp",
                        },
                    });
                    if let (Some(h), Some(obj)) = (m.host_ip, o.as_object_mut()) {
                        obj.insert("hostIP".into(), json!(h.to_string()));
                    }
                    o
                })
                .collect();
            rc.insert("portMappings".into(), Value::Array(maps));
        }
        if wants("bandwidth") {
            if let Some(b) = req.bandwidth {
                let mut o = serde_json::Map::new();
                for (k, v) in [
                    ("ingressRate", b.ingress_rate),
                    ("ingressBurst", b.ingress_burst),
                    ("egressRate", b.egress_rate),
                    ("egressBurst", b.egress_burst),
                ] {
                    if let Some(v) = v {
                        o.insert(k.into(), json!(v));
                    }
                }
                rc.insert("bandwidth".into(), Value::Object(o));
            }
        }
        if wants("dns") {
            if let Some(d) = &req.dns {
                rc.insert(
                    "dns".into(),
                    json!({"servers": d.servers, "searches": d.searches, "options": d.options}),
                );
            }
        }
        (!rc.is_empty()).then_some(Value::Object(rc))
    }

    /// The stdin of one plugin: its config plus name, version, prevResult, runtimeConfig.
    fn plugin_stdin(
        list_name: &str,
        version: &str,
        plugin: &Value,
        prev: Option<&Value>,
        req: &PodNetworkRequest,
    ) -> Value {
        let mut conf = plugin.clone();
        if let Some(o) = conf.as_object_mut() {
            o.insert("name".into(), json!(list_name));
            o.insert("cniVersion".into(), json!(version));
            if let Some(p) = prev {
                o.insert("prevResult".into(), p.clone());
            }
            if let Some(rc) = Self::runtime_config(plugin, req) {
                o.insert("runtimeConfig".into(), rc);
            }
        }
        conf
    }

    /// Runs one plugin; the stdout on success, the plugin's error otherwise.
    async fn exec(&self, ty: &str, call: &Call<'_>, stdin: &Value) -> Result<Vec<u8>, String> {
        let bin = self
            .find_plugin(ty)
            .ok_or_else(|| format!("plugin {ty:?} not found in {:?}", self.cfg.bin_dirs))?;
        let cni_path =
            std::env::join_paths(&self.cfg.bin_dirs).map_err(|e| format!("CNI_PATH: {e}"))?;
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.env("CNI_COMMAND", call.command)
            .env("CNI_CONTAINERID", &call.req.pod_id)
            .env("CNI_NETNS", call.netns)
            .env("CNI_IFNAME", &self.cfg.ifname)
            .env("CNI_ARGS", &call.cni_args)
            .env("CNI_PATH", cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| format!("run plugin {ty}: {e}"))?;
        let input = serde_json::to_vec(stdin).map_err(|e| e.to_string())?;
        let timeout = Duration::from_secs(self.cfg.plugin_timeout_secs);
        let run = async move {
            if let Some(mut pipe) = child.stdin.take() {
                // A plugin may exit without reading its stdin.
                let _ = pipe.write_all(&input).await;
            }
            child.wait_with_output().await
        };
        let out = tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| {
                format!(
                    "plugin {ty} {} timed out after {}s",
                    call.command, self.cfg.plugin_timeout_secs
                )
            })?
            .map_err(|e| format!("wait for plugin {ty}: {e}"))?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let detail = match serde_json::from_slice::<Value>(&out.stdout) {
            Ok(v) if v.get("msg").is_some() => {
                let msg = v.get("msg").and_then(Value::as_str).unwrap_or_default();
                let details = v.get("details").and_then(Value::as_str).unwrap_or_default();
                let code = v.get("code").and_then(Value::as_u64).unwrap_or(0);
                if details.is_empty() {
                    format!("{msg} (code {code})")
                } else {
                    format!("{msg}: {details} (code {code})")
                }
            }
            _ => format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout).trim(),
                if stderr.is_empty() {
                    String::new()
                } else {
                    format!(" stderr: {stderr}")
                }
            ),
        };
        Err(format!(
            "plugin {ty} {} failed ({}): {detail}",
            call.command, out.status
        ))
    }

    /// DEL through `list` in reverse, each plugin given `prev` (0.4.0+).
    async fn del_chain(
        &self,
        list: &NetworkList,
        prev: Option<&Value>,
        req: &PodNetworkRequest,
    ) -> Result<(), String> {
        let call = Call::pod("DEL", req);
        let prev = prev.filter(|_| version_tuple(&list.version) >= (0, 4, 0));
        let mut errors = Vec::new();
        for p in list.plugins.iter().rev() {
            let ty = plugin_type(p).unwrap_or_default();
            let stdin = Self::plugin_stdin(&list.name, &list.version, p, prev, req);
            if let Err(e) = self.exec(ty, &call, &stdin).await {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    async fn add(&self, req: &PodNetworkRequest) -> Result<PodNetworkStatus, NetworkError> {
        let err = |message: String| NetworkError::Setup {
            pod_id: req.pod_id.clone(),
            message,
        };
        if !safe_name(&req.pod_id) {
            return Err(NetworkError::InvalidRequest {
                pod_id: req.pod_id.clone(),
                message: "the pod id must be letters, digits, '-', '_' or '.'".into(),
            });
        }
        let list = self
            .load()
            .map_err(|message| NetworkError::NotReady { message })?;
        let call = Call::pod("ADD", req);
        let mut prev: Option<Value> = None;
        for p in &list.plugins {
            let ty = plugin_type(p).unwrap_or_default();
            let stdin = Self::plugin_stdin(&list.name, &list.version, p, prev.as_ref(), req);
            let out = match self.exec(ty, &call, &stdin).await {
                Ok(out) => out,
                Err(e) => {
                    let undo = self.del_chain(&list, prev.as_ref(), req).await;
                    let tail = undo
                        .err()
                        .map(|u| format!("; undoing it failed: {u}"))
                        .unwrap_or_default();
                    return Err(err(format!("network {}: {e}{tail}", list.name)));
                }
            };
            match serde_json::from_slice::<Value>(&out) {
                Ok(v) => prev = Some(v),
                Err(e) => {
                    let _ = self.del_chain(&list, prev.as_ref(), req).await;
                    return Err(err(format!(
                        "network {}: plugin {ty} ADD printed no valid result: {e}",
                        list.name
                    )));
                }
            }
        }
        let result = prev.unwrap_or(Value::Null);
        let entry = CacheEntry {
            kind: "cniCacheV1".into(),
            container_id: req.pod_id.clone(),
            if_name: self.cfg.ifname.clone(),
            network_name: list.name.clone(),
            cni_args: call.cni_args,
            config: list.raw.clone(),
            result: result.clone(),
        };
        if let Err(e) = self.write_cache(&list.name, &req.pod_id, &entry) {
            let _ = self.del_chain(&list, Some(&result), req).await;
            return Err(err(format!(
                "cache the result of network {}: {e}",
                list.name
            )));
        }
        Ok(PodNetworkStatus {
            ips: result_ips(&result),
        })
    }

    fn write_cache(&self, network: &str, id: &str, entry: &CacheEntry) -> Result<(), String> {
        let path = self.cache_path(network, id);
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let tmp = path.with_extension("tmp");
        let body = serde_json::to_vec(entry).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, body).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Cache entries of this pod (normally one: the network ADD used).
    fn cached(&self, pod_id: &str) -> Vec<(PathBuf, CacheEntry)> {
        let dir = self.cfg.cache_dir.join("results");
        let suffix = format!("-{pod_id}-{}", self.cfg.ifname);
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        rd.filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(&suffix))
            })
            .filter_map(|p| {
                let e: CacheEntry = serde_json::from_slice(&std::fs::read(&p).ok()?).ok()?;
                (e.container_id == pod_id).then_some((p, e))
            })
            .collect()
    }

    fn list_from_cache(&self, e: &CacheEntry) -> NetworkList {
        NetworkList {
            name: e.network_name.clone(),
            version: e
                .config
                .get("cniVersion")
                .and_then(Value::as_str)
                .unwrap_or("0.2.0")
                .to_string(),
            plugins: e
                .config
                .get("plugins")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            raw: e.config.clone(),
            file: PathBuf::new(),
        }
    }

    async fn del(&self, req: &PodNetworkRequest) -> Result<(), NetworkError> {
        let err = |message: String| NetworkError::Teardown {
            pod_id: req.pod_id.clone(),
            message,
        };
        if !safe_name(&req.pod_id) {
            return Ok(());
        }
        let cached = self.cached(&req.pod_id);
        if cached.is_empty() {
            // No ADD finished (or its cache write did not): DEL with the current config.
            return match self.load() {
                Ok(list) => self
                    .del_chain(&list, None, req)
                    .await
                    .map_err(|e| err(format!("network {}: {e}", list.name))),
                Err(_) => Ok(()),
            };
        }
        for (path, entry) in cached {
            let list = self.list_from_cache(&entry);
            self.del_chain(&list, Some(&entry.result), req)
                .await
                .map_err(|e| err(format!("network {}: {e}", list.name)))?;
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(err(format!("{}: {e}", path.display()))),
            }
        }
        Ok(())
    }

    /// CHECK (CNI 0.4.0+) of a pod's network with its cached result.
    pub async fn check(&self, req: &PodNetworkRequest) -> Result<(), NetworkError> {
        let err = |message: String| NetworkError::Setup {
            pod_id: req.pod_id.clone(),
            message,
        };
        let cached = self.cached(&req.pod_id);
        let Some((_, entry)) = cached.first() else {
            return Err(err("no cached ADD result to check".into()));
        };
        let list = self.list_from_cache(entry);
        if version_tuple(&list.version) < (0, 4, 0) {
            return Ok(());
        }
        let call = Call::pod("CHECK", req);
        for p in &list.plugins {
            let ty = plugin_type(p).unwrap_or_default();
            let stdin = Self::plugin_stdin(&list.name, &list.version, p, Some(&entry.result), req);
            self.exec(ty, &call, &stdin)
                .await
                .map_err(|e| err(format!("network {}: {e}", list.name)))?;
        }
        Ok(())
    }

    /// VERSION of every plugin of the config in force: plugin type to the versions
    /// it supports. Fails when a plugin does not support the config's `cniVersion`.
    pub async fn versions(&self) -> Result<BTreeMap<String, Vec<String>>, NetworkError> {
        let list = self
            .load()
            .map_err(|message| NetworkError::NotReady { message })?;
        let req = PodNetworkRequest::default();
        let call = Call {
            command: "VERSION",
            req: &req,
            cni_args: String::new(),
            netns: Path::new(""),
        };
        let mut out = BTreeMap::new();
        for p in &list.plugins {
            let ty = plugin_type(p).unwrap_or_default();
            let v = self
                .exec(ty, &call, &json!({"cniVersion": list.version}))
                .await
                .map_err(|message| NetworkError::NotReady { message })?;
            /// What a plugin's VERSION command prints.
            #[derive(serde::Deserialize)]
            struct VersionInfo {
                #[serde(rename = "supportedVersions", default)]
                supported: Vec<String>,
            }
            let VersionInfo { supported } =
                serde_json::from_slice(&v).map_err(|e| NetworkError::NotReady {
                    message: format!("plugin {ty} VERSION: {e}"),
                })?;
            if !supported.contains(&list.version) {
                return Err(NetworkError::NotReady {
                    message: format!(
                        "plugin {ty} does not support cniVersion {} of {} (it supports {supported:?})",
                        list.version,
                        list.file.display()
                    ),
                });
            }
            out.insert(ty.to_string(), supported);
        }
        Ok(out)
    }

    /// Whether a cached ADD result exists for the pod.
    pub fn has_cached(&self, pod_id: &str) -> bool {
        safe_name(pod_id) && !self.cached(pod_id).is_empty()
    }

    /// The name of the network config in force, if any.
    pub fn network_name(&self) -> Option<String> {
        self.load().ok().map(|l| l.name)
    }
}

impl NetworkBackend for CniBackend {
    fn name(&self) -> &'static str {
        "cni"
    }

    fn status(&self) -> BackendStatus {
        match self.load() {
            Ok(_) => BackendStatus::ready(),
            Err(message) => BackendStatus::not_ready("NetworkPluginNotReady", message),
        }
    }

    fn setup<'a>(
        &'a self,
        req: &'a PodNetworkRequest,
    ) -> BoxFuture<'a, Result<PodNetworkStatus, NetworkError>> {
        Box::pin(self.add(req))
    }

    fn teardown<'a>(
        &'a self,
        req: &'a PodNetworkRequest,
    ) -> BoxFuture<'a, Result<(), NetworkError>> {
        Box::pin(self.del(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips_from_results() {
        let r = json!({"cniVersion":"1.0.0","ips":[{"address":"10.1.0.5/24"},{"address":"fd00::5/64"}]});
        assert_eq!(result_ips(&r).len(), 2);
        let old = json!({"ip4":{"ip":"10.1.0.6/24"}});
        assert_eq!(result_ips(&old)[0].to_string(), "10.1.0.6");
    }

    #[test]
    fn versions_compare() {
        assert!(version_tuple("1.0.0") > version_tuple("0.4.0"));
        assert!(version_tuple("0.3.1") < version_tuple("0.4.0"));
    }

    #[test]
    fn runtime_config_only_for_declared_capabilities() {
        let req = PodNetworkRequest {
            port_mappings: vec![crate::PortMapping {
                protocol: Protocol::Udp,
                container_port: 53,
                host_port: 5353,
                host_ip: None,
            }],
            ..Default::default()
        };
        assert!(CniBackend::runtime_config(&json!({"type":"bridge"}), &req).is_none());
        let rc = CniBackend::runtime_config(
            &json!({"type":"portmap","capabilities":{"portMappings":true}}),
            &req,
        )
        .unwrap();
        assert_eq!(rc["portMappings"][0]["protocol"], "udp");
        assert_eq!(rc["portMappings"][0]["hostPort"], 5353);
    }
}
