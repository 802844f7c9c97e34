//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`; not an API):
//! request validation with the promises it makes to the code after it checked by
//! assertions, and the call-sequence rig over the managers and the fake host.

use std::path::{Component, Path};

use crius_cri_api::v1 as cri;

use crate::config::{Config, RuntimeHandler};
pub use crate::container::fuzzing::{CallRig, PodSpec, UNDO_STEPS};
pub use crate::error::{CriError, CriResult};
use crate::podfiles;
use crate::validate;

/// A value that becomes a path component or a line of a file.
fn assert_component(field: &str, v: &str) {
    assert!(!v.is_empty(), "{field} accepted empty");
    assert!(v.len() <= 253, "{field} accepted {} bytes", v.len());
    assert!(
        !v.contains(|c: char| c == '/' || c.is_control()),
        "{field} accepted {v:?}"
    );
    assert!(v != "." && v != "..", "{field} accepted {v:?}");
}

/// Validates a RunPodSandbox request as the service does (handlers `runc` and
/// `crun`). An accepted one has usable metadata, a reserved name made of it, a
/// known handler, and makes pod files (`hostname`, `hosts`, `resolv.conf`) with
/// exactly the lines it asks for. Returns the shape of an accepted request, or the
/// refusal.
pub fn pod_sandbox(req: cri::RunPodSandboxRequest) -> CriResult<String> {
    let mut cfg = Config::default();
    cfg.runtimes.insert(
        "crun".into(),
        RuntimeHandler {
            path: "crun".into(),
        },
    );
    let pod = validate::pod_sandbox(req.config, &req.runtime_handler, &cfg)?;
    let md = pod.config.metadata.clone().unwrap_or_default();
    assert_component("metadata.name", &md.name);
    assert_component("metadata.namespace", &md.namespace);
    assert_component("metadata.uid", &md.uid);
    assert_eq!(
        pod.reserved_name,
        format!("{}_{}_{}_{}", md.name, md.namespace, md.uid, md.attempt)
    );
    assert!(cfg.runtimes.contains_key(&pod.runtime_handler));
    let c = &pod.config;
    assert!(
        c.hostname.len() <= 64,
        "a {}-byte hostname",
        c.hostname.len()
    );
    assert!(
        !c.hostname
            .contains(|ch: char| ch == '\0' || ch == '/' || ch.is_whitespace()),
        "hostname {:?}",
        c.hostname
    );
    if !c.log_directory.is_empty() {
        assert!(c.log_directory.starts_with('/'), "{:?}", c.log_directory);
        assert!(!c.log_directory.contains(['\0', '\n', '\r']));
    }
    let hosts = podfiles::hosts(&c.hostname, &["10.0.0.2".to_string()]);
    assert_eq!(hosts.lines().count(), 7, "hosts for {:?}", c.hostname);
    if let Some(text) = podfiles::resolv_conf(c.dns_config.as_ref()) {
        let dns = c.dns_config.clone().unwrap_or_default();
        let want = usize::from(!dns.searches.is_empty())
            + dns.servers.len()
            + usize::from(!dns.options.is_empty());
        assert_eq!(
            text.lines().count(),
            want,
            "resolv.conf for {dns:?}:\n{text}"
        );
        for line in text.lines() {
            assert!(
                ["search ", "nameserver ", "options "]
                    .iter()
                    .any(|k| line.starts_with(k)),
                "resolv.conf line {line:?}"
            );
        }
    }
    for (k, v) in c.linux.iter().flat_map(|l| &l.sysctls) {
        assert!(
            !k.is_empty() && !k.contains(|ch: char| ch == '\0' || ch.is_whitespace()),
            "sysctl {k:?}"
        );
        assert!(
            !v.is_empty() && !v.contains(['\0', '\n']),
            "sysctl {k}={v:?}"
        );
    }
    for pm in &c.port_mappings {
        assert!((1..=65535).contains(&pm.container_port));
        assert!((0..=65535).contains(&pm.host_port));
    }
    Ok(format!(
        "pod host_network {} host_ipc {} pod_pid {} dns {} ports {}",
        pod.host_network,
        pod.host_ipc,
        pod.pod_pid,
        c.dns_config.is_some(),
        c.port_mappings.len().min(2)
    ))
}

/// Validates a CreateContainer request as the service does. An accepted one has a
/// name without `/` or control characters, and a log path that, joined to the
/// pod's log directory, stays inside it. Returns the shape of an accepted request,
/// or the refusal.
pub fn create_container(req: cri::CreateContainerRequest) -> CriResult<String> {
    let v = validate::create_container(req)?;
    assert!(!v.pod_sandbox_id.is_empty());
    assert!(
        !v.name.is_empty() && !v.name.contains(|c: char| c == '/' || c.is_control()),
        "name {:?}",
        v.name
    );
    assert!(!v.image.is_empty());
    let log = &v.config.log_path;
    assert!(!log.contains(char::is_control), "log_path {log:?}");
    let dir = Path::new("/var/log/pods/ns_pod_uid");
    let joined = dir.join(log);
    assert!(
        joined.starts_with(dir),
        "log_path {log:?} leaves the pod's log directory: {}",
        joined.display()
    );
    assert!(
        !joined.components().any(|c| c == Component::ParentDir),
        "log_path {log:?} climbs out: {}",
        joined.display()
    );
    Ok(format!(
        "container log {} depth {} sandbox {}",
        !log.is_empty(),
        Path::new(log).components().count().min(3),
        v.sandbox_config.is_some()
    ))
}
