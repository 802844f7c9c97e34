//! linux.namespaces: a new mount namespace always; the PID namespace the security
//! context's mode asks for; the pod's network, IPC and (with the pod's network) UTS
//! namespaces; a new cgroup namespace unless privileged.

use std::path::{Path, PathBuf};

use crius_cri_api::v1 as cri;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType};

use crate::SC;
use crate::error::{Result, build, invalid, unsupported};

/// The pod's namespaces a container joins; `None`: the host's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodNamespaces {
    /// The pod's network namespace (`None`: a host-network pod).
    pub net: Option<PathBuf>,
    /// The pod's IPC namespace (`None`: host IPC).
    pub ipc: Option<PathBuf>,
    /// The pod's UTS namespace; joined only with the pod's network namespace.
    pub uts: Option<PathBuf>,
    /// The pod's shared PID namespace (held by its infra process), when it has one.
    pub pid: Option<PathBuf>,
    /// The PID namespace of the container named by `namespace_options.target_id`.
    pub target_pid: Option<PathBuf>,
    /// The pod's own user namespace (`hostUsers: false`), which owns its other
    /// namespaces; its maps are the pod config's `userns_options`.
    pub user: Option<PathBuf>,
}

fn ns(typ: LinuxNamespaceType, path: Option<&Path>) -> Result<LinuxNamespace> {
    let b = LinuxNamespaceBuilder::default().typ(typ);
    let b = match path {
        Some(p) => b.path(p),
        None => b,
    };
    b.build().map_err(build("namespaces"))
}

/// linux.namespaces.
pub(crate) fn namespaces(
    sc: &cri::LinuxContainerSecurityContext,
    pod: &PodNamespaces,
    privileged: bool,
) -> Result<Vec<LinuxNamespace>> {
    let field = format!("{SC}.namespace_options");
    let mut out = vec![ns(LinuxNamespaceType::Mount, None)?];
    if let Some(p) = &pod.user {
        out.push(ns(LinuxNamespaceType::User, Some(p))?);
    }
    let pid = match &sc.namespace_options {
        None => cri::NamespaceMode::Container,
        Some(opts) => {
            if let Some(u) = &opts.userns_options {
                let pod_mode = if pod.user.is_some() { "POD" } else { "NODE" };
                let wanted = cri::NamespaceMode::try_from(u.mode).ok();
                let agrees = match wanted {
                    Some(cri::NamespaceMode::Node) => pod.user.is_none(),
                    Some(cri::NamespaceMode::Pod) => pod.user.is_some(),
                    _ => false,
                };
                if !agrees {
                    return Err(invalid(
                        format!("{field}.userns_options.mode"),
                        format!(
                            "is {}, but a container's user namespace is its pod's, and the pod's mode is {pod_mode}",
                            wanted.map_or("unknown", |m| m.as_str_name())
                        ),
                    ));
                }
            }
            cri::NamespaceMode::try_from(opts.pid).map_err(|_| {
                invalid(format!("{field}.pid"), format!("unknown mode {}", opts.pid))
            })?
        }
    };
    // POD and TARGET join a PID namespace that must already be there.
    let join = |path: &Option<PathBuf>, subfield: &str, missing: &str| match path {
        Some(p) => ns(LinuxNamespaceType::Pid, Some(p)),
        None => Err(unsupported(format!("{field}.{subfield}"), missing)),
    };
    match pid {
        cri::NamespaceMode::Container => out.push(ns(LinuxNamespaceType::Pid, None)?),
        cri::NamespaceMode::Node => {}
        cri::NamespaceMode::Pod => out.push(join(
            &pod.pid,
            "pid",
            "POD, but the pod sandbox was not created with a pod-level PID namespace",
        )?),
        cri::NamespaceMode::Target => out.push(join(
            &pod.target_pid,
            "target_id",
            "TARGET needs a running target container",
        )?),
    }
    if let Some(p) = &pod.net {
        out.push(ns(LinuxNamespaceType::Network, Some(p))?);
    }
    if let Some(p) = &pod.ipc {
        out.push(ns(LinuxNamespaceType::Ipc, Some(p))?);
    }
    // Host network implies the host's UTS namespace.
    if let (Some(_), Some(p)) = (&pod.net, &pod.uts) {
        out.push(ns(LinuxNamespaceType::Uts, Some(p))?);
    }
    if !privileged {
        out.push(ns(LinuxNamespaceType::Cgroup, None)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::SpecError;

    fn pod() -> PodNamespaces {
        PodNamespaces {
            net: Some("/run/crius/pods/p/net".into()),
            ipc: Some("/run/crius/pods/p/ipc".into()),
            uts: Some("/run/crius/pods/p/uts".into()),
            ..Default::default()
        }
    }

    fn list(v: &[LinuxNamespace]) -> Vec<(String, Option<String>)> {
        v.iter()
            .map(|n| {
                let j = serde_json::to_value(n).unwrap();
                (
                    j["type"].as_str().unwrap().to_string(),
                    j["path"].as_str().map(str::to_string),
                )
            })
            .collect()
    }

    fn with_pid(mode: cri::NamespaceMode) -> cri::LinuxContainerSecurityContext {
        cri::LinuxContainerSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                pid: mode as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn namespaces_joined_and_pid_modes() {
        let none = cri::LinuxContainerSecurityContext::default();
        let got = list(&namespaces(&none, &pod(), false).unwrap());
        let s = |t: &str, p: Option<&str>| (t.to_string(), p.map(str::to_string));
        assert_eq!(
            got,
            vec![
                s("mount", None),
                s("pid", None),
                s("network", Some("/run/crius/pods/p/net")),
                s("ipc", Some("/run/crius/pods/p/ipc")),
                s("uts", Some("/run/crius/pods/p/uts")),
                s("cgroup", None),
            ]
        );
        // Host network (and so host UTS), host IPC; privileged: no cgroup namespace.
        let host = PodNamespaces {
            uts: Some("/x/uts".into()),
            ..Default::default()
        };
        let got = list(&namespaces(&none, &host, true).unwrap());
        assert_eq!(got, vec![s("mount", None), s("pid", None)]);

        let got = list(&namespaces(&with_pid(cri::NamespaceMode::Node), &pod(), false).unwrap());
        assert!(!got.iter().any(|(t, _)| t == "pid"));
        // POD and TARGET without a namespace to join are refused, naming the field.
        for (mode, field) in [
            (cri::NamespaceMode::Pod, "pid"),
            (cri::NamespaceMode::Target, "target_id"),
        ] {
            let e = namespaces(&with_pid(mode), &pod(), false).unwrap_err();
            assert!(matches!(e, SpecError::Unsupported { .. }), "{e}");
            assert_eq!(
                e.field(),
                Some(format!("{SC}.namespace_options.{field}").as_str())
            );
        }
        // With the pod's (or the target's) PID namespace, the container joins it.
        let mut p = pod();
        p.pid = Some("/proc/42/ns/pid".into());
        p.target_pid = Some("/proc/43/ns/pid".into());
        let got = list(&namespaces(&with_pid(cri::NamespaceMode::Pod), &p, false).unwrap());
        assert!(got.contains(&s("pid", Some("/proc/42/ns/pid"))));
        let got = list(&namespaces(&with_pid(cri::NamespaceMode::Target), &p, false).unwrap());
        assert!(got.contains(&s("pid", Some("/proc/43/ns/pid"))));
    }

    #[test]
    fn user_namespace_modes_must_agree_with_the_pod_and_unknown_modes_are_refused() {
        let mut sc = with_pid(cri::NamespaceMode::Container);
        let with_user = |sc: &mut cri::LinuxContainerSecurityContext, mode: cri::NamespaceMode| {
            if let Some(o) = sc.namespace_options.as_mut() {
                o.userns_options = Some(cri::UserNamespace {
                    mode: mode as i32,
                    ..Default::default()
                });
            }
        };
        let field = format!("{SC}.namespace_options.userns_options.mode");
        let mut own = pod();
        own.user = Some("/run/crius/pods/p/ns/user".into());
        // POD in a pod without its own, NODE in a pod with one, CONTAINER anywhere.
        for (mode, p) in [
            (cri::NamespaceMode::Pod, pod()),
            (cri::NamespaceMode::Node, own.clone()),
            (cri::NamespaceMode::Container, own.clone()),
        ] {
            with_user(&mut sc, mode);
            let e = namespaces(&sc, &p, false).unwrap_err();
            assert!(matches!(e, SpecError::InvalidField { .. }), "{e}");
            assert_eq!(e.field(), Some(field.as_str()));
        }
        // The pod's own is joined, first after the mount namespace; NODE adds none.
        with_user(&mut sc, cri::NamespaceMode::Pod);
        let got = list(&namespaces(&sc, &own, false).unwrap());
        assert_eq!(
            got[1],
            (
                "user".to_string(),
                Some("/run/crius/pods/p/ns/user".to_string())
            )
        );
        with_user(&mut sc, cri::NamespaceMode::Node);
        let got = list(&namespaces(&sc, &pod(), false).unwrap());
        assert!(got.iter().all(|(t, _)| t != "user"), "{got:?}");
        if let Some(o) = sc.namespace_options.as_mut() {
            o.userns_options = None;
            o.pid = 9;
        }
        let e = namespaces(&sc, &pod(), false).unwrap_err();
        assert!(matches!(e, SpecError::InvalidField { .. }), "{e}");
        assert_eq!(
            e.field(),
            Some(format!("{SC}.namespace_options.pid").as_str())
        );
    }
}
