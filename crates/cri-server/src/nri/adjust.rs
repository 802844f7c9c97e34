//! Merging the adjustments of several plugins into one change of the spec, as NRI
//! defines it: plugins answer in index order; a plugin that sets a field claims it;
//! a second plugin setting a field another has claimed is a conflict, and the
//! container is not created. Removals (a key, destination or path marked with a
//! leading `-`) claim nothing; hooks are appended and never conflict.

use std::collections::HashMap;

use crius_spec::adjust::{
    AdjustDevice, AdjustHook, AdjustHooks, AdjustMount, AdjustResources, AdjustRlimit, Adjustment,
};

use super::api;

/// Two plugins set the same field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugins {first:?} and {second:?} both tried to set {field}")]
pub struct Conflict {
    pub field: String,
    pub first: String,
    pub second: String,
}

/// Who set what, while merging.
#[derive(Default)]
struct Owners(HashMap<String, String>);

impl Owners {
    fn claim(&mut self, field: String, plugin: &str) -> Result<(), Conflict> {
        match self.0.get(&field) {
            Some(first) if first != plugin => Err(Conflict {
                field,
                first: first.clone(),
                second: plugin.to_string(),
            }),
            Some(_) => Ok(()),
            None => {
                self.0.insert(field, plugin.to_string());
                Ok(())
            }
        }
    }
}

fn removal(key: &str) -> Option<&str> {
    key.strip_prefix('-')
}

fn hook(h: &api::Hook) -> AdjustHook {
    AdjustHook {
        path: h.path.clone(),
        args: h.args.clone(),
        env: h.env.clone(),
        timeout: h.timeout.as_ref().map(|t| t.value),
    }
}

fn append_hooks(to: &mut AdjustHooks, h: &api::Hooks) {
    to.prestart.extend(h.prestart.iter().map(hook));
    to.create_runtime.extend(h.create_runtime.iter().map(hook));
    to.create_container
        .extend(h.create_container.iter().map(hook));
    to.start_container
        .extend(h.start_container.iter().map(hook));
    to.poststart.extend(h.poststart.iter().map(hook));
    to.poststop.extend(h.poststop.iter().map(hook));
}

/// Merges resource values of `r` from `plugin` into `to`.
fn merge_resources(
    to: &mut AdjustResources,
    r: &api::LinuxResources,
    plugin: &str,
    owners: &mut Owners,
    scope: &str,
) -> Result<(), Conflict> {
    macro_rules! take {
        ($dst:expr, $src:expr, $name:literal) => {
            if let Some(v) = $src {
                owners.claim(format!("{scope}{}", $name), plugin)?;
                $dst = Some(v.value.clone());
            }
        };
    }
    if let Some(m) = &r.memory {
        take!(to.memory_limit, &m.limit, "memory limit");
        take!(to.memory_reservation, &m.reservation, "memory reservation");
        take!(to.memory_swap, &m.swap, "memory swap limit");
        take!(to.memory_kernel, &m.kernel, "kernel memory limit");
        take!(
            to.memory_kernel_tcp,
            &m.kernel_tcp,
            "kernel TCP memory limit"
        );
        take!(to.memory_swappiness, &m.swappiness, "memory swappiness");
        take!(
            to.memory_disable_oom_killer,
            &m.disable_oom_killer,
            "OOM killer disabling"
        );
        take!(
            to.memory_use_hierarchy,
            &m.use_hierarchy,
            "memory hierarchy use"
        );
    }
    if let Some(c) = &r.cpu {
        take!(to.cpu_shares, &c.shares, "CPU shares");
        take!(to.cpu_quota, &c.quota, "CPU quota");
        take!(to.cpu_period, &c.period, "CPU period");
        take!(
            to.cpu_realtime_runtime,
            &c.realtime_runtime,
            "CPU realtime runtime"
        );
        take!(
            to.cpu_realtime_period,
            &c.realtime_period,
            "CPU realtime period"
        );
        if !c.cpus.is_empty() {
            owners.claim(format!("{scope}cpuset CPUs"), plugin)?;
            to.cpu_cpus = Some(c.cpus.clone());
        }
        if !c.mems.is_empty() {
            owners.claim(format!("{scope}cpuset memory nodes"), plugin)?;
            to.cpu_mems = Some(c.mems.clone());
        }
    }
    for h in &r.hugepage_limits {
        owners.claim(format!("{scope}hugepage limit {}", h.page_size), plugin)?;
        to.hugepage_limits.insert(h.page_size.clone(), h.limit);
    }
    if let Some(p) = &r.pids {
        owners.claim(format!("{scope}pids limit"), plugin)?;
        to.pids_limit = Some(p.limit);
    }
    for (k, v) in &r.unified {
        owners.claim(format!("{scope}unified cgroup file {k}"), plugin)?;
        to.unified.insert(k.clone(), v.clone());
    }
    Ok(())
}

/// Why an adjustment cannot be applied at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error(transparent)]
    Conflict(#[from] Conflict),
    #[error("plugin {plugin:?} asked for {what}, which crius does not support")]
    Unsupported { plugin: String, what: &'static str },
}

/// Merges the adjustments of `replies` (plugin name, adjustment), in the order the
/// plugins answered.
pub fn merge(replies: &[(String, api::ContainerAdjustment)]) -> Result<Adjustment, MergeError> {
    let mut out = Adjustment::default();
    let mut owners = Owners::default();
    for (plugin, a) in replies {
        let plugin = plugin.as_str();
        for (k, v) in &a.annotations {
            match removal(k) {
                Some(key) => {
                    out.annotations.insert(key.to_string(), None);
                }
                None => {
                    owners.claim(format!("annotation {k:?}"), plugin)?;
                    out.annotations.insert(k.clone(), Some(v.clone()));
                }
            }
        }
        for m in &a.mounts {
            match removal(&m.destination) {
                Some(dest) => {
                    out.mounts.retain(|x| x.destination != dest);
                    out.remove_mounts.push(dest.to_string());
                }
                None => {
                    owners.claim(format!("mount {:?}", m.destination), plugin)?;
                    out.mounts.retain(|x| x.destination != m.destination);
                    out.mounts.push(AdjustMount {
                        destination: m.destination.clone(),
                        typ: m.r#type.clone(),
                        source: m.source.clone(),
                        options: m.options.clone(),
                    });
                }
            }
        }
        for kv in &a.env {
            match removal(&kv.key) {
                Some(key) => {
                    out.env.retain(|(k, _)| k != key);
                    out.env.push((key.to_string(), None));
                }
                None => {
                    owners.claim(format!("environment variable {:?}", kv.key), plugin)?;
                    out.env.retain(|(k, _)| *k != kv.key);
                    out.env.push((kv.key.clone(), Some(kv.value.clone())));
                }
            }
        }
        if let Some(h) = &a.hooks {
            append_hooks(&mut out.hooks, h);
        }
        for r in &a.rlimits {
            owners.claim(format!("rlimit {}", r.r#type), plugin)?;
            out.rlimits.retain(|x| x.typ != r.r#type);
            out.rlimits.push(AdjustRlimit {
                typ: r.r#type.clone(),
                hard: r.hard,
                soft: r.soft,
            });
        }
        if !a.args.is_empty() {
            owners.claim("the command line".to_string(), plugin)?;
            out.args = Some(a.args.clone());
        }
        if !a.cdi_devices.is_empty() {
            return Err(MergeError::Unsupported {
                plugin: plugin.to_string(),
                what: "CDI devices",
            });
        }
        let Some(l) = &a.linux else { continue };
        for d in &l.devices {
            match removal(&d.path) {
                Some(path) => {
                    out.devices.retain(|x| x.path != path);
                    out.remove_devices.push(path.to_string());
                }
                None => {
                    owners.claim(format!("device {:?}", d.path), plugin)?;
                    out.devices.retain(|x| x.path != d.path);
                    out.devices.push(AdjustDevice {
                        path: d.path.clone(),
                        typ: d.r#type.clone(),
                        major: d.major,
                        minor: d.minor,
                        file_mode: d.file_mode.as_ref().map(|m| m.value),
                        uid: d.uid.as_ref().map(|m| m.value),
                        gid: d.gid.as_ref().map(|m| m.value),
                    });
                }
            }
        }
        if let Some(r) = &l.resources {
            merge_resources(&mut out.resources, r, plugin, &mut owners, "")?;
            if r.blockio_class.is_some() || r.rdt_class.is_some() {
                return Err(MergeError::Unsupported {
                    plugin: plugin.to_string(),
                    what: "a block I/O or RDT class",
                });
            }
        }
        if !l.cgroups_path.is_empty() {
            owners.claim("the cgroups path".to_string(), plugin)?;
            out.cgroups_path = Some(l.cgroups_path.clone());
        }
        if let Some(o) = &l.oom_score_adj {
            owners.claim("the OOM score adjustment".to_string(), plugin)?;
            out.oom_score_adj = Some(o.value);
        }
        let unsupported = [
            (l.io_priority.is_some(), "an I/O priority"),
            (l.seccomp_policy.is_some(), "a seccomp policy"),
            (!l.namespaces.is_empty(), "namespaces"),
            (!l.sysctl.is_empty(), "sysctls"),
            (!l.net_devices.is_empty(), "network devices"),
            (l.scheduler.is_some(), "a scheduling policy"),
            (l.rdt.is_some(), "RDT settings"),
            (l.memory_policy.is_some(), "a memory policy"),
        ];
        if let Some((_, what)) = unsupported.iter().find(|(set, _)| *set) {
            return Err(MergeError::Unsupported {
                plugin: plugin.to_string(),
                what,
            });
        }
    }
    Ok(out)
}

/// Merges the resource updates several plugins made to one container (UpdateContainer).
pub fn merge_updates(
    replies: &[(String, api::LinuxResources)],
) -> Result<AdjustResources, Conflict> {
    let mut out = AdjustResources::default();
    let mut owners = Owners::default();
    for (plugin, r) in replies {
        merge_resources(&mut out, r, plugin, &mut owners, "")?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str, v: &str) -> api::KeyValue {
        api::KeyValue {
            key: k.into(),
            value: v.into(),
        }
    }

    fn mount(dest: &str, src: &str) -> api::Mount {
        api::Mount {
            destination: dest.into(),
            r#type: "bind".into(),
            source: src.into(),
            options: vec!["rbind".into()],
        }
    }

    fn memory(limit: i64) -> api::LinuxContainerAdjustment {
        api::LinuxContainerAdjustment {
            resources: Some(api::LinuxResources {
                memory: Some(api::LinuxMemory {
                    limit: Some(api::OptionalInt64 { value: limit }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn disjoint_adjustments_merge_in_order() {
        let a = api::ContainerAdjustment {
            env: vec![env("A", "1"), env("-GONE", "")],
            mounts: vec![mount("/a", "/src/a")],
            annotations: [("x".to_string(), "1".to_string())].into(),
            hooks: Some(api::Hooks {
                prestart: vec![api::Hook {
                    path: "/h1".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let b = api::ContainerAdjustment {
            env: vec![env("B", "2")],
            mounts: vec![mount("-/old", "")],
            hooks: Some(api::Hooks {
                prestart: vec![api::Hook {
                    path: "/h2".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            linux: Some(memory(1 << 20)),
            ..Default::default()
        };
        let got =
            merge(&[("10-a".into(), a), ("20-b".into(), b)]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            got.env,
            vec![
                ("A".into(), Some("1".into())),
                ("GONE".into(), None),
                ("B".into(), Some("2".into()))
            ]
        );
        assert_eq!(got.mounts.len(), 1);
        assert_eq!(got.remove_mounts, vec!["/old".to_string()]);
        assert_eq!(got.annotations.get("x"), Some(&Some("1".to_string())));
        let hooks: Vec<&str> = got.hooks.prestart.iter().map(|h| h.path.as_str()).collect();
        assert_eq!(
            hooks,
            ["/h1", "/h2"],
            "hooks of both plugins, in plugin order"
        );
        assert_eq!(got.resources.memory_limit, Some(1 << 20));
    }

    #[test]
    fn two_plugins_setting_one_field_conflict_naming_both() {
        let cases: Vec<(api::ContainerAdjustment, &str)> = vec![
            (
                api::ContainerAdjustment {
                    env: vec![env("A", "1")],
                    ..Default::default()
                },
                "environment variable \"A\"",
            ),
            (
                api::ContainerAdjustment {
                    mounts: vec![mount("/m", "/s")],
                    ..Default::default()
                },
                "mount \"/m\"",
            ),
            (
                api::ContainerAdjustment {
                    annotations: [("k".to_string(), "v".to_string())].into(),
                    ..Default::default()
                },
                "annotation \"k\"",
            ),
            (
                api::ContainerAdjustment {
                    linux: Some(memory(5)),
                    ..Default::default()
                },
                "memory limit",
            ),
            (
                api::ContainerAdjustment {
                    linux: Some(api::LinuxContainerAdjustment {
                        oom_score_adj: Some(api::OptionalInt { value: 1 }),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                "the OOM score adjustment",
            ),
            (
                api::ContainerAdjustment {
                    rlimits: vec![api::PosixRlimit {
                        r#type: "RLIMIT_NOFILE".into(),
                        hard: 1,
                        soft: 1,
                    }],
                    ..Default::default()
                },
                "rlimit RLIMIT_NOFILE",
            ),
        ];
        for (adj, field) in cases {
            let err = merge(&[("10-a".into(), adj.clone()), ("20-b".into(), adj.clone())]);
            assert_eq!(
                err,
                Err(MergeError::Conflict(Conflict {
                    field: field.to_string(),
                    first: "10-a".into(),
                    second: "20-b".into()
                }))
            );
            // One plugin setting it twice, or one removing what another sets, is fine.
            assert!(merge(&[("10-a".into(), adj.clone()), ("10-a".into(), adj.clone())]).is_ok());
        }
        let removes = api::ContainerAdjustment {
            env: vec![env("-A", "")],
            ..Default::default()
        };
        let sets = api::ContainerAdjustment {
            env: vec![env("A", "1")],
            ..Default::default()
        };
        let got = merge(&[("10-a".into(), removes), ("20-b".into(), sets)])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got.env, vec![("A".into(), Some("1".into()))]);
    }

    #[test]
    fn unsupported_adjustments_are_refused_naming_the_plugin() {
        let adj = api::ContainerAdjustment {
            linux: Some(api::LinuxContainerAdjustment {
                sysctl: [("net.x".to_string(), "1".to_string())].into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = merge(&[("10-a".into(), adj)]);
        assert!(
            matches!(err, Err(MergeError::Unsupported { ref plugin, .. }) if plugin == "10-a"),
            "{err:?}"
        );
    }

    #[test]
    fn resource_updates_conflict_per_field() {
        let cpu = |shares| api::LinuxResources {
            cpu: Some(api::LinuxCpu {
                shares: Some(api::OptionalUInt64 { value: shares }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mem = memory(7).resources.unwrap_or_default();
        let ok = merge_updates(&[("a".into(), cpu(2)), ("b".into(), mem)])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((ok.cpu_shares, ok.memory_limit), (Some(2), Some(7)));
        assert!(merge_updates(&[("a".into(), cpu(2)), ("b".into(), cpu(3))]).is_err());
    }
}
