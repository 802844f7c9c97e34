//! crius's pods and containers as NRI's messages. A container's process, mounts,
//! hooks and Linux settings come from its OCI spec (the one just generated, or the
//! bundle's config.json), read as JSON.

use std::path::Path;

use crius_store::{ContainerRecord, ContainerState, PodRecord};
use serde_json::Value;

use super::api;

/// The NRI message of a pod.
pub fn pod(rec: &PodRecord) -> api::PodSandbox {
    let md = rec.config.metadata.clone().unwrap_or_default();
    let linux = rec.config.linux.as_ref();
    let mut namespaces = Vec::new();
    for (kind, path) in [
        ("network", &rec.namespaces.net),
        ("ipc", &rec.namespaces.ipc),
        ("uts", &rec.namespaces.uts),
    ] {
        if let Some(p) = path {
            namespaces.push(api::LinuxNamespace {
                r#type: kind.to_string(),
                path: p.display().to_string(),
            });
        }
    }
    if let Some(pid) = rec.infra_pid {
        namespaces.push(api::LinuxNamespace {
            r#type: "pid".to_string(),
            path: format!("/proc/{pid}/ns/pid"),
        });
    }
    api::PodSandbox {
        id: rec.id.clone(),
        name: md.name,
        uid: md.uid,
        namespace: md.namespace,
        labels: rec.config.labels.clone().into_iter().collect(),
        annotations: rec.config.annotations.clone().into_iter().collect(),
        runtime_handler: rec.runtime_handler.clone(),
        linux: Some(api::LinuxPodSandbox {
            cgroup_parent: linux.map(|l| l.cgroup_parent.clone()).unwrap_or_default(),
            namespaces,
            ..Default::default()
        }),
        pid: rec.infra_pid.unwrap_or(0),
        ips: rec.ips.clone(),
    }
}

/// The NRI state of a container.
pub fn state(s: ContainerState) -> api::ContainerState {
    match s {
        ContainerState::Creating => api::ContainerState::ContainerUnknown,
        ContainerState::Created => api::ContainerState::ContainerCreated,
        ContainerState::Running => api::ContainerState::ContainerRunning,
        ContainerState::Exited => api::ContainerState::ContainerStopped,
    }
}

/// The bundle's config.json as JSON, if it can be read.
pub fn read_spec(bundle: &Path) -> Option<Value> {
    let text = std::fs::read(bundle.join("config.json")).ok()?;
    serde_json::from_slice(&text).ok()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn opt_i64(v: &Value) -> Option<api::OptionalInt64> {
    v.as_i64().map(|value| api::OptionalInt64 { value })
}

fn opt_u64(v: &Value) -> Option<api::OptionalUInt64> {
    v.as_u64().map(|value| api::OptionalUInt64 { value })
}

fn hooks(v: &Value) -> Vec<api::Hook> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|h| api::Hook {
                    path: text(&h["path"]),
                    args: strings(&h["args"]),
                    env: strings(&h["env"]),
                    timeout: h["timeout"]
                        .as_i64()
                        .map(|value| api::OptionalInt { value }),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The resources of an OCI spec's `linux.resources`.
pub fn resources(r: &Value) -> api::LinuxResources {
    let m = &r["memory"];
    let c = &r["cpu"];
    api::LinuxResources {
        memory: m.is_object().then(|| api::LinuxMemory {
            limit: opt_i64(&m["limit"]),
            reservation: opt_i64(&m["reservation"]),
            swap: opt_i64(&m["swap"]),
            kernel: opt_i64(&m["kernel"]),
            kernel_tcp: opt_i64(&m["kernelTCP"]),
            swappiness: opt_u64(&m["swappiness"]),
            disable_oom_killer: m["disableOOMKiller"]
                .as_bool()
                .map(|value| api::OptionalBool { value }),
            use_hierarchy: m["useHierarchy"]
                .as_bool()
                .map(|value| api::OptionalBool { value }),
        }),
        cpu: c.is_object().then(|| api::LinuxCpu {
            shares: opt_u64(&c["shares"]),
            quota: opt_i64(&c["quota"]),
            period: opt_u64(&c["period"]),
            realtime_runtime: opt_i64(&c["realtimeRuntime"]),
            realtime_period: opt_u64(&c["realtimePeriod"]),
            cpus: text(&c["cpus"]),
            mems: text(&c["mems"]),
        }),
        hugepage_limits: r["hugepageLimits"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|h| api::HugepageLimit {
                        page_size: text(&h["pageSize"]),
                        limit: h["limit"].as_u64().unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        unified: r["unified"]
            .as_object()
            .map(|o| o.iter().map(|(k, v)| (k.clone(), text(v))).collect())
            .unwrap_or_default(),
        pids: r["pids"]["limit"]
            .as_i64()
            .map(|limit| api::LinuxPids { limit }),
        ..Default::default()
    }
}

/// The NRI message of a container, with what its spec says when there is one.
pub fn container(rec: &ContainerRecord, spec: Option<&Value>) -> api::Container {
    let md = rec.config.metadata.clone().unwrap_or_default();
    let mut c = api::Container {
        id: rec.id.clone(),
        pod_sandbox_id: rec.pod_id.clone(),
        name: md.name,
        state: state(rec.state) as i32,
        labels: rec.config.labels.clone().into_iter().collect(),
        annotations: rec.config.annotations.clone().into_iter().collect(),
        pid: rec.pid,
        created_at: rec.created_at,
        started_at: rec.started_at,
        finished_at: rec.finished_at,
        exit_code: rec.exit_code,
        status_reason: rec.reason.clone(),
        status_message: rec.message.clone(),
        ..Default::default()
    };
    let Some(s) = spec else { return c };
    let p = &s["process"];
    c.args = strings(&p["args"]);
    c.env = strings(&p["env"]);
    if let Some(a) = s["annotations"].as_object() {
        for (k, v) in a {
            c.annotations.entry(k.clone()).or_insert_with(|| text(v));
        }
    }
    c.mounts = s["mounts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| api::Mount {
                    destination: text(&m["destination"]),
                    r#type: text(&m["type"]),
                    source: text(&m["source"]),
                    options: strings(&m["options"]),
                })
                .collect()
        })
        .unwrap_or_default();
    let h = &s["hooks"];
    if h.is_object() {
        c.hooks = Some(api::Hooks {
            prestart: hooks(&h["prestart"]),
            create_runtime: hooks(&h["createRuntime"]),
            create_container: hooks(&h["createContainer"]),
            start_container: hooks(&h["startContainer"]),
            poststart: hooks(&h["poststart"]),
            poststop: hooks(&h["poststop"]),
        });
    }
    c.rlimits = p["rlimits"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| api::PosixRlimit {
                    r#type: text(&r["type"]),
                    hard: r["hard"].as_u64().unwrap_or(0),
                    soft: r["soft"].as_u64().unwrap_or(0),
                })
                .collect()
        })
        .unwrap_or_default();
    let l = &s["linux"];
    c.linux = Some(api::LinuxContainer {
        namespaces: l["namespaces"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|n| api::LinuxNamespace {
                        r#type: text(&n["type"]),
                        path: text(&n["path"]),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        devices: l["devices"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|d| api::LinuxDevice {
                        path: text(&d["path"]),
                        r#type: text(&d["type"]),
                        major: d["major"].as_i64().unwrap_or(0),
                        minor: d["minor"].as_i64().unwrap_or(0),
                        file_mode: d["fileMode"]
                            .as_u64()
                            .map(|v| api::OptionalFileMode { value: v as u32 }),
                        uid: d["uid"]
                            .as_u64()
                            .map(|v| api::OptionalUInt32 { value: v as u32 }),
                        gid: d["gid"]
                            .as_u64()
                            .map(|v| api::OptionalUInt32 { value: v as u32 }),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        resources: l["resources"]
            .is_object()
            .then(|| resources(&l["resources"])),
        oom_score_adj: p["oomScoreAdj"]
            .as_i64()
            .map(|value| api::OptionalInt { value }),
        cgroups_path: text(&l["cgroupsPath"]),
        ..Default::default()
    });
    c
}

/// The CRI resources a plugin's update asks for, over `current`.
pub fn cri_resources(
    current: &crius_cri_api::v1::LinuxContainerResources,
    r: &crius_spec::adjust::AdjustResources,
) -> crius_cri_api::v1::LinuxContainerResources {
    let mut out = current.clone();
    if let Some(v) = r.cpu_period {
        out.cpu_period = i64::try_from(v).unwrap_or(i64::MAX);
    }
    if let Some(v) = r.cpu_quota {
        out.cpu_quota = v;
    }
    if let Some(v) = r.cpu_shares {
        out.cpu_shares = i64::try_from(v).unwrap_or(i64::MAX);
    }
    if let Some(v) = r.memory_limit {
        out.memory_limit_in_bytes = v;
    }
    if let Some(v) = r.memory_swap {
        out.memory_swap_limit_in_bytes = v;
    }
    if let Some(v) = &r.cpu_cpus {
        out.cpuset_cpus = v.clone();
    }
    if let Some(v) = &r.cpu_mems {
        out.cpuset_mems = v.clone();
    }
    for (size, limit) in &r.hugepage_limits {
        out.hugepage_limits.retain(|h| &h.page_size != size);
        out.hugepage_limits.push(crius_cri_api::v1::HugepageLimit {
            page_size: size.clone(),
            limit: *limit,
        });
    }
    for (k, v) in &r.unified {
        out.unified.insert(k.clone(), v.clone());
    }
    out
}

/// The NRI form of CRI resources (what UpdateContainer asks for).
pub fn from_cri(r: &crius_cri_api::v1::LinuxContainerResources) -> api::LinuxResources {
    let nonzero_i = |v: i64| (v != 0).then_some(api::OptionalInt64 { value: v });
    let nonzero_u = |v: i64| (v > 0).then_some(api::OptionalUInt64 { value: v as u64 });
    api::LinuxResources {
        memory: Some(api::LinuxMemory {
            limit: nonzero_i(r.memory_limit_in_bytes),
            swap: nonzero_i(r.memory_swap_limit_in_bytes),
            ..Default::default()
        }),
        cpu: Some(api::LinuxCpu {
            shares: nonzero_u(r.cpu_shares),
            quota: nonzero_i(r.cpu_quota),
            period: nonzero_u(r.cpu_period),
            cpus: r.cpuset_cpus.clone(),
            mems: r.cpuset_mems.clone(),
            ..Default::default()
        }),
        hugepage_limits: r
            .hugepage_limits
            .iter()
            .map(|h| api::HugepageLimit {
                page_size: h.page_size.clone(),
                limit: h.limit,
            })
            .collect(),
        unified: r.unified.clone().into_iter().collect(),
        ..Default::default()
    }
}
