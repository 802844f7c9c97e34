//! Changes made to a generated spec after the fact: what NRI plugins ask for when a
//! container is created (merged by the daemon from every plugin's answer). Applied to
//! the spec's JSON form, field by field as the OCI runtime spec names them, and
//! parsed back, so the result is still a valid spec.

use std::collections::BTreeMap;

pub use oci_spec::runtime::Spec;
use serde_json::{Map, Value, json};

use crate::SpecError;

/// One mount to add (replacing any at the same destination).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdjustMount {
    pub destination: String,
    pub typ: String,
    pub source: String,
    pub options: Vec<String>,
}

/// One OCI hook.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdjustHook {
    pub path: String,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub timeout: Option<i64>,
}

/// Hooks to append, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdjustHooks {
    pub prestart: Vec<AdjustHook>,
    pub create_runtime: Vec<AdjustHook>,
    pub create_container: Vec<AdjustHook>,
    pub start_container: Vec<AdjustHook>,
    pub poststart: Vec<AdjustHook>,
    pub poststop: Vec<AdjustHook>,
}

impl AdjustHooks {
    fn kinds(&self) -> [(&'static str, &Vec<AdjustHook>); 6] {
        [
            ("prestart", &self.prestart),
            ("createRuntime", &self.create_runtime),
            ("createContainer", &self.create_container),
            ("startContainer", &self.start_container),
            ("poststart", &self.poststart),
            ("poststop", &self.poststop),
        ]
    }

    pub fn is_empty(&self) -> bool {
        self.kinds().iter().all(|(_, h)| h.is_empty())
    }
}

/// One device node to add (replacing any at the same path), allowed in the device
/// cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdjustDevice {
    pub path: String,
    pub typ: String,
    pub major: i64,
    pub minor: i64,
    pub file_mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// Resource values to set; `None` leaves the spec's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdjustResources {
    pub memory_limit: Option<i64>,
    pub memory_reservation: Option<i64>,
    pub memory_swap: Option<i64>,
    pub memory_kernel: Option<i64>,
    pub memory_kernel_tcp: Option<i64>,
    pub memory_swappiness: Option<u64>,
    pub memory_disable_oom_killer: Option<bool>,
    pub memory_use_hierarchy: Option<bool>,
    pub cpu_shares: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub cpu_realtime_runtime: Option<i64>,
    pub cpu_realtime_period: Option<u64>,
    pub cpu_cpus: Option<String>,
    pub cpu_mems: Option<String>,
    /// Page size → limit in bytes.
    pub hugepage_limits: BTreeMap<String, u64>,
    pub pids_limit: Option<i64>,
    /// cgroup v2 files → values.
    pub unified: BTreeMap<String, String>,
}

/// One resource limit, replacing any of the same type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdjustRlimit {
    pub typ: String,
    pub hard: u64,
    pub soft: u64,
}

/// Everything to change in a container's spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Adjustment {
    /// Annotations to set (`Some`) or remove (`None`).
    pub annotations: BTreeMap<String, Option<String>>,
    /// Mount destinations to remove, then mounts to add.
    pub remove_mounts: Vec<String>,
    pub mounts: Vec<AdjustMount>,
    /// Environment variables to set (`Some`) or remove (`None`), in order.
    pub env: Vec<(String, Option<String>)>,
    pub hooks: AdjustHooks,
    /// Device paths to remove, then devices to add.
    pub remove_devices: Vec<String>,
    pub devices: Vec<AdjustDevice>,
    pub resources: AdjustResources,
    pub cgroups_path: Option<String>,
    pub oom_score_adj: Option<i64>,
    pub rlimits: Vec<AdjustRlimit>,
    /// The whole command line, replaced.
    pub args: Option<Vec<String>>,
}

fn field<'a>(v: &'a mut Value, key: &str) -> &'a mut Value {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    // Indexing an object by a missing key inserts null there.
    &mut v[key]
}

fn array<'a>(v: &'a mut Value, key: &str) -> &'a mut Vec<Value> {
    let f = field(v, key);
    if !f.is_array() {
        *f = Value::Array(Vec::new());
    }
    match f {
        Value::Array(a) => a,
        // Made an array just above.
        _ => unreachable!(),
    }
}

fn set<T: serde::Serialize>(v: &mut Value, key: &str, value: &Option<T>) {
    if let Some(x) = value {
        *field(v, key) = json!(x);
    }
}

/// Applies `adj` to `spec`.
pub fn apply(spec: &mut Spec, adj: &Adjustment) -> Result<(), SpecError> {
    if *adj == Adjustment::default() {
        return Ok(());
    }
    let corrupt = |context: &str| {
        let context = context.to_string();
        move |e| SpecError::Corrupt {
            context,
            source: Some(e),
        }
    };
    let mut v = serde_json::to_value(&*spec).map_err(corrupt("encoding the spec"))?;

    for (k, val) in &adj.annotations {
        let a = field(&mut v, "annotations");
        if !a.is_object() {
            *a = Value::Object(Map::new());
        }
        if let Value::Object(m) = a {
            match val {
                Some(val) => {
                    m.insert(k.clone(), json!(val));
                }
                None => {
                    m.remove(k);
                }
            }
        }
    }

    let mounts = array(&mut v, "mounts");
    let dest = |m: &Value| {
        m.get("destination")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    mounts.retain(|m| {
        dest(m).is_none_or(|d| {
            !adj.remove_mounts.contains(&d) && !adj.mounts.iter().any(|n| n.destination == d)
        })
    });
    for m in &adj.mounts {
        let mut o = json!({"destination": m.destination, "source": m.source, "options": m.options});
        if !m.typ.is_empty() {
            *field(&mut o, "type") = json!(m.typ);
        }
        mounts.push(o);
    }

    let process = field(&mut v, "process");
    if let Some(args) = &adj.args {
        *field(process, "args") = json!(args);
    }
    let env = array(process, "env");
    for (k, val) in &adj.env {
        let prefix = format!("{k}=");
        let at = env
            .iter()
            .position(|e| e.as_str().is_some_and(|e| e.starts_with(&prefix) || e == k));
        match (val, at) {
            (Some(val), Some(i)) => env[i] = json!(format!("{k}={val}")),
            (Some(val), None) => env.push(json!(format!("{k}={val}"))),
            (None, Some(i)) => {
                env.remove(i);
            }
            (None, None) => {}
        }
    }
    set(process, "oomScoreAdj", &adj.oom_score_adj);
    if !adj.rlimits.is_empty() {
        let rl = array(process, "rlimits");
        for r in &adj.rlimits {
            rl.retain(|x| x.get("type").and_then(Value::as_str) != Some(r.typ.as_str()));
            rl.push(json!({"type": r.typ, "hard": r.hard, "soft": r.soft}));
        }
    }

    if !adj.hooks.is_empty() {
        let hooks = field(&mut v, "hooks");
        for (kind, list) in adj.hooks.kinds() {
            for h in list {
                let mut o = json!({"path": h.path});
                if !h.args.is_empty() {
                    *field(&mut o, "args") = json!(h.args);
                }
                if !h.env.is_empty() {
                    *field(&mut o, "env") = json!(h.env);
                }
                set(&mut o, "timeout", &h.timeout);
                array(hooks, kind).push(o);
            }
        }
    }

    let linux = field(&mut v, "linux");
    set(linux, "cgroupsPath", &adj.cgroups_path);
    if !adj.remove_devices.is_empty() || !adj.devices.is_empty() {
        let devices = array(linux, "devices");
        let path = |d: &Value| d.get("path").and_then(Value::as_str).map(str::to_string);
        devices.retain(|d| {
            path(d).is_none_or(|p| {
                !adj.remove_devices.contains(&p) && !adj.devices.iter().any(|n| n.path == p)
            })
        });
        for d in &adj.devices {
            let mut o = json!({"path": d.path, "type": d.typ, "major": d.major, "minor": d.minor});
            set(&mut o, "fileMode", &d.file_mode);
            set(&mut o, "uid", &d.uid);
            set(&mut o, "gid", &d.gid);
            devices.push(o);
        }
    }
    let r = &adj.resources;
    let res = field(linux, "resources");
    if !adj.devices.is_empty() {
        let rules = array(res, "devices");
        for d in &adj.devices {
            rules.push(json!({"allow": true, "type": d.typ, "major": d.major, "minor": d.minor, "access": "rwm"}));
        }
    }
    let memory = [
        ("limit", r.memory_limit),
        ("reservation", r.memory_reservation),
        ("swap", r.memory_swap),
        ("kernel", r.memory_kernel),
        ("kernelTCP", r.memory_kernel_tcp),
    ];
    if memory.iter().any(|(_, x)| x.is_some())
        || r.memory_swappiness.is_some()
        || r.memory_disable_oom_killer.is_some()
        || r.memory_use_hierarchy.is_some()
    {
        let m = field(res, "memory");
        for (k, x) in memory {
            set(m, k, &x);
        }
        set(m, "swappiness", &r.memory_swappiness);
        set(m, "disableOOMKiller", &r.memory_disable_oom_killer);
        set(m, "useHierarchy", &r.memory_use_hierarchy);
    }
    let cpu_set = r.cpu_shares.is_some()
        || r.cpu_quota.is_some()
        || r.cpu_period.is_some()
        || r.cpu_realtime_runtime.is_some()
        || r.cpu_realtime_period.is_some()
        || r.cpu_cpus.is_some()
        || r.cpu_mems.is_some();
    if cpu_set {
        let c = field(res, "cpu");
        set(c, "shares", &r.cpu_shares);
        set(c, "quota", &r.cpu_quota);
        set(c, "period", &r.cpu_period);
        set(c, "realtimeRuntime", &r.cpu_realtime_runtime);
        set(c, "realtimePeriod", &r.cpu_realtime_period);
        set(c, "cpus", &r.cpu_cpus);
        set(c, "mems", &r.cpu_mems);
    }
    if !r.hugepage_limits.is_empty() {
        let h = array(res, "hugepageLimits");
        for (size, limit) in &r.hugepage_limits {
            h.retain(|x| x.get("pageSize").and_then(Value::as_str) != Some(size.as_str()));
            h.push(json!({"pageSize": size, "limit": limit}));
        }
    }
    if let Some(p) = r.pids_limit {
        *field(field(res, "pids"), "limit") = json!(p);
    }
    if !r.unified.is_empty() {
        let u = field(res, "unified");
        for (k, val) in &r.unified {
            *field(u, k) = json!(val);
        }
    }
    prune_nulls(&mut v);
    *spec =
        serde_json::from_value(v).map_err(corrupt("the adjusted spec is not a valid OCI spec"))?;
    Ok(())
}

/// Drops the empty placeholders `field` left where nothing was set.
fn prune_nulls(v: &mut Value) {
    if let Value::Object(m) = v {
        m.retain(|_, x| !x.is_null());
        for x in m.values_mut() {
            prune_nulls(x);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        let s = json!({
            "ociVersion": "1.0.2",
            "process": {"cwd": "/", "args": ["sh"], "env": ["PATH=/bin", "A=1"], "user": {"uid": 0, "gid": 0}},
            "root": {"path": "rootfs"},
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                       {"destination": "/data", "type": "bind", "source": "/old", "options": ["rbind"]}],
            "linux": {"resources": {"memory": {"limit": 100}}}
        });
        serde_json::from_value(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn an_empty_adjustment_changes_nothing() {
        let mut s = spec();
        apply(&mut s, &Adjustment::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s, spec());
    }

    #[test]
    #[allow(clippy::field_reassign_with_default)]
    fn env_mounts_annotations_resources_and_more_are_applied() {
        let mut s = spec();
        let mut adj = Adjustment::default();
        adj.env = vec![
            ("A".into(), Some("2".into())),
            ("B".into(), Some("x=y".into())),
            ("PATH".into(), None),
        ];
        adj.mounts = vec![AdjustMount {
            destination: "/data".into(),
            typ: "bind".into(),
            source: "/new".into(),
            options: vec!["rbind".into(), "ro".into()],
        }];
        adj.remove_mounts = vec!["/proc".into()];
        adj.annotations.insert("k".into(), Some("v".into()));
        adj.resources.memory_limit = Some(1 << 30);
        adj.resources.cpu_shares = Some(512);
        adj.resources.cpu_cpus = Some("0".into());
        adj.oom_score_adj = Some(-100);
        adj.cgroups_path = Some("/pods/x".into());
        adj.rlimits = vec![AdjustRlimit {
            typ: "RLIMIT_NOFILE".into(),
            hard: 10,
            soft: 5,
        }];
        adj.hooks.prestart = vec![AdjustHook {
            path: "/bin/true".into(),
            ..Default::default()
        }];
        adj.devices = vec![AdjustDevice {
            path: "/dev/foo".into(),
            typ: "c".into(),
            major: 1,
            minor: 3,
            ..Default::default()
        }];
        apply(&mut s, &adj).unwrap_or_else(|e| panic!("{e}"));
        let v = serde_json::to_value(&s).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v["process"]["env"], json!(["A=2", "B=x=y"]));
        assert_eq!(
            v["mounts"],
            json!([{"destination": "/data", "type": "bind", "source": "/new", "options": ["rbind", "ro"]}])
        );
        assert_eq!(v["annotations"]["k"], "v");
        assert_eq!(v["linux"]["resources"]["memory"]["limit"], 1 << 30);
        assert_eq!(v["linux"]["resources"]["cpu"]["shares"], 512);
        assert_eq!(v["linux"]["resources"]["cpu"]["cpus"], "0");
        assert_eq!(v["process"]["oomScoreAdj"], -100);
        assert_eq!(v["linux"]["cgroupsPath"], "/pods/x");
        assert_eq!(
            v["process"]["rlimits"],
            json!([{"type": "RLIMIT_NOFILE", "hard": 10, "soft": 5}])
        );
        assert_eq!(v["hooks"]["prestart"][0]["path"], "/bin/true");
        assert_eq!(v["linux"]["devices"][0]["path"], "/dev/foo");
        assert_eq!(v["linux"]["resources"]["devices"][0]["access"], "rwm");
    }

    #[test]
    fn a_bad_rlimit_type_is_refused_not_written() {
        let mut s = spec();
        let adj = Adjustment {
            rlimits: vec![AdjustRlimit {
                typ: "RLIMIT_BOGUS".into(),
                hard: 1,
                soft: 1,
            }],
            ..Default::default()
        };
        assert!(apply(&mut s, &adj).is_err());
        assert_eq!(s, spec());
    }
}
