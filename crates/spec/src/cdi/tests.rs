// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxBuilder, LinuxDeviceBuilder, LinuxDeviceType, MountBuilder, ProcessBuilder, Spec,
    SpecBuilder, UserBuilder,
};
use serde_json::{Value, json};

use super::*;

fn req(name: &str) -> Request {
    Request {
        name: name.into(),
        field: "config.cdi_devices[0].name".into(),
    }
}

fn write(dir: &Path, file: &str, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(file);
    std::fs::write(&p, text).unwrap();
    p
}

fn spec_json(kind: &str, devices: &[(&str, &str)]) -> String {
    let devs: Vec<Value> = devices
        .iter()
        .map(|(name, env)| json!({"name": name, "containerEdits": {"env": [env]}}))
        .collect();
    json!({"cdiVersion": "0.6.0", "kind": kind, "devices": devs}).to_string()
}

#[test]
fn qualified_names() {
    let q: QualifiedName = "vendor.example.com/device=foo".parse().unwrap();
    assert_eq!(
        (q.vendor.as_str(), q.class.as_str(), q.name.as_str()),
        ("vendor.example.com", "device", "foo")
    );
    assert_eq!(q.to_string(), "vendor.example.com/device=foo");
    assert_eq!(q.kind(), "vendor.example.com/device");
    for ok in [
        "nvidia.com/gpu=0",
        "nvidia.com/gpu=all",
        "a/b=c",
        "vendor.com/foo-bar_1.x=GPU-1:2",
    ] {
        ok.parse::<QualifiedName>()
            .unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for (bad, why) in [
        ("foo", "missing '='"),
        ("vendor.com/device", "missing '='"),
        ("vendor.com=foo", "no '/'"),
        ("/dev/null", "missing '='"),
        ("/dev/x=y", "empty vendor"),
        ("vendor.com/device=", "empty device name"),
        ("/device=foo", "empty vendor"),
        ("vendor.com/=foo", "empty class"),
        ("1vendor.com/device=foo", "must start with a letter"),
        ("vendor.com-/device=foo", "must end with a letter or digit"),
        ("vendor.com/dev/ice=foo", "holds '/'"),
        ("vendor.com/device=fo o", "holds ' '"),
        (
            "vendor.com/device=-foo",
            "must start with a letter or digit",
        ),
    ] {
        let e = bad.parse::<QualifiedName>().unwrap_err();
        assert!(e.contains(why), "{bad}: {e}");
    }
}

#[test]
fn json_and_yaml_files_parse_the_same() {
    let json_text = r#"{
        "cdiVersion": "0.5.0",
        "kind": "vendor.example.com/device",
        "containerEdits": {"env": ["SPEC=1"]},
        "devices": [{
            "name": "foo",
            "containerEdits": {
                "env": ["FOO=bar"],
                "deviceNodes": [{"path": "/dev/foo", "hostPath": "/dev/null", "type": "c",
                    "major": 1, "minor": 3, "fileMode": 420, "permissions": "rw", "uid": 5, "gid": 6}],
                "mounts": [{"hostPath": "/h", "containerPath": "/c", "options": ["bind", "ro"]}],
                "hooks": [{"hookName": "createContainer", "path": "/bin/true", "args": ["true"],
                    "env": ["A=b"], "timeout": 5}]
            }
        }]
    }"#;
    let yaml_text = r#"
cdiVersion: "0.5.0"
kind: vendor.example.com/device
containerEdits:
  env: [SPEC=1]
devices:
  - name: foo
    containerEdits:
      env:
        - FOO=bar
      deviceNodes:
        - path: /dev/foo
          hostPath: /dev/null
          type: c
          major: 1
          minor: 3
          fileMode: 0644
          permissions: rw
          uid: 5
          gid: 6
      mounts:
        - hostPath: /h
          containerPath: /c
          options: [bind, ro]
      hooks:
        - hookName: createContainer
          path: /bin/true
          args: ["true"]
          env: [A=b]
          timeout: 5
"#;
    let j = parse_spec(json_text, false).unwrap();
    let y = parse_spec(yaml_text, true).unwrap();
    assert_eq!(
        j.file, y.file,
        "YAML's 0644 is octal, as in the reference reader"
    );
    assert_eq!(
        (j.vendor.as_str(), j.class.as_str()),
        ("vendor.example.com", "device")
    );
    let node = &j.file.devices[0].container_edits.device_nodes[0];
    assert_eq!(node.file_mode, Some(0o644));
    assert_eq!(node.host_path, "/dev/null");
    assert_eq!(j.file.container_edits.env, vec!["SPEC=1"]);
}

#[test]
fn versions_and_validation() {
    let ok = |t: &str| parse_spec(t, false).unwrap();
    let bad = |t: &str| parse_spec(t, false).unwrap_err();
    // Every released version, with or without a leading v.
    for v in ["0.3.0", "v0.3.0", "0.8.0", "1.0.0", "1.1.0"] {
        ok(&json!({"cdiVersion": v, "kind": "a.com/b", "devices": [{"name": "x", "containerEdits": {"env": ["A=1"]}}]}).to_string());
    }
    let e = bad(&json!({"cdiVersion": "9.9.9", "kind": "a.com/b", "devices": [{"name": "x", "containerEdits": {"env": ["A=1"]}}]}).to_string());
    assert!(e.contains("not a released CDI version"), "{e}");
    // A field newer than the declared version.
    for (v, edits, need) in [
        ("0.6.0", json!({"additionalGids": [5]}), "0.7.0"),
        (
            "0.4.0",
            json!({"deviceNodes": [{"path": "/dev/x", "hostPath": "/dev/null"}]}),
            "0.5.0",
        ),
        (
            "0.3.0",
            json!({"mounts": [{"hostPath": "/a", "containerPath": "/b", "type": "bind"}]}),
            "0.4.0",
        ),
        (
            "1.0.0",
            json!({"intelRdt": {"closID": "c", "enableMonitoring": true}}),
            "1.1.0",
        ),
    ] {
        let e = bad(&json!({"cdiVersion": v, "kind": "a.com/b", "devices": [{"name": "x", "containerEdits": edits}]}).to_string());
        assert!(e.contains(&format!("they need {need}")), "{v}: {e}");
    }
    let e = bad(&json!({"cdiVersion": "0.5.0", "kind": "a.com/b", "annotations": {"k": "v"}, "devices": [{"name": "x", "containerEdits": {"env": ["A=1"]}}]}).to_string());
    assert!(e.contains("they need 0.6.0"), "{e}");
    // Unknown fields, bad kinds, devices, edits.
    let e = bad(r#"{"cdiVersion": "0.6.0", "kind": "a.com/b", "devices": [], "extra": 1}"#);
    assert!(e.contains("extra"), "{e}");
    for (text, why) in [
        (
            json!({"cdiVersion": "0.6.0", "kind": "ab", "devices": [{"name": "x", "containerEdits": {"env": ["A=1"]}}]}),
            "kind",
        ),
        (
            json!({"cdiVersion": "0.6.0", "kind": "a.com/b", "devices": []}),
            "at least one device",
        ),
        (
            json!({"cdiVersion": "0.6.0", "kind": "a.com/b", "devices": [{"name": "x", "containerEdits": {}}]}),
            "needs container edits",
        ),
        (
            json!({"cdiVersion": "0.6.0", "kind": "a.com/b", "devices": [{"name": "x", "containerEdits": {"env": ["A=1"]}}, {"name": "x", "containerEdits": {"env": ["A=1"]}}]}),
            "defined twice",
        ),
        (
            json!({"cdiVersion": "0.6.0", "kind": "a.com/b", "devices": [{"name": "x", "containerEdits": {"env": ["=1"]}}]}),
            "not NAME=value",
        ),
        (
            json!({"cdiVersion": "0.6.0", "kind": "a.com/b", "devices": [{"name": "x", "containerEdits": {"deviceNodes": [{"path": "dev/x"}]}}]}),
            "not an absolute path",
        ),
        (
            json!({"cdiVersion": "0.6.0", "kind": "a.com/b", "devices": [{"name": "x", "containerEdits": {"deviceNodes": [{"path": "/dev/x", "type": "q"}]}}]}),
            "not b, c, u or p",
        ),
        (
            json!({"cdiVersion": "0.6.0", "kind": "a.com/b", "devices": [{"name": "x", "containerEdits": {"deviceNodes": [{"path": "/dev/x", "permissions": "rwx"}]}}]}),
            "permissions",
        ),
        (
            json!({"cdiVersion": "0.6.0", "kind": "a.com/b", "devices": [{"name": "x", "containerEdits": {"hooks": [{"hookName": "later", "path": "/bin/true"}]}}]}),
            "hookName",
        ),
        (
            json!({"cdiVersion": "0.6.0", "kind": "a.com/b", "devices": [{"name": "x", "containerEdits": {"hooks": [{"hookName": "poststop", "path": "true"}]}}]}),
            "not an absolute path",
        ),
        (
            json!({"cdiVersion": "0.6.0", "kind": "a.com/b", "devices": [{"name": "x", "containerEdits": {"mounts": [{"hostPath": "", "containerPath": "/c"}]}}]}),
            "hostPath is empty",
        ),
    ] {
        let e = bad(&text.to_string());
        assert!(e.contains(why), "{text}: {e}");
    }
    // Syntax errors say where.
    let e = parse_spec("cdiVersion: [", true).unwrap_err();
    assert!(!e.is_empty());
}

#[test]
fn later_directory_wins_and_same_priority_is_ambiguous() {
    let tmp = tempfile::tempdir().unwrap();
    let (low, high) = (tmp.path().join("etc"), tmp.path().join("run"));
    write(
        &low,
        "a.json",
        &spec_json("v.com/d", &[("foo", "FROM=low"), ("low-only", "X=1")]),
    );
    write(
        &high,
        "b.yaml",
        "cdiVersion: 0.6.0\nkind: v.com/d\ndevices:\n- name: foo\n  containerEdits:\n    env: [FROM=high]\n",
    );
    // Twice in one directory: ambiguous, even though a lower directory has it too.
    write(&high, "c.json", &spec_json("v.com/d", &[("dup", "A=1")]));
    write(&high, "d.json", &spec_json("v.com/d", &[("dup", "A=2")]));
    write(&low, "e.json", &spec_json("v.com/d", &[("dup", "A=0")]));
    // Not a spec file.
    write(&high, "notes.txt", "{");
    let reg = Registry::scan(&[low.clone(), high.clone(), tmp.path().join("missing")]);
    let edits = reg.resolve(&[req("v.com/d=foo")]).unwrap();
    assert_eq!(edits.edits[0].env, vec!["FROM=high"]);
    let edits = reg.resolve(&[req("v.com/d=low-only")]).unwrap();
    assert_eq!(edits.edits[0].env, vec!["X=1"]);
    let e = reg.resolve(&[req("v.com/d=dup")]).unwrap_err();
    assert!(matches!(e, CdiError::Ambiguous { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("\"v.com/d=dup\"") && text.contains("c.json") && text.contains("d.json"),
        "{text}"
    );
    assert!(text.starts_with("config.cdi_devices[0].name: "), "{text}");
    assert!(reg.broken().is_empty(), "{:?}", reg.broken());
    let names: Vec<String> = reg.devices().into_iter().map(|d| d.name).collect();
    assert_eq!(names, vec!["v.com/d=foo", "v.com/d=low-only"]);
    assert_eq!(reg.ambiguous().len(), 1);
}

#[test]
fn a_broken_file_breaks_only_its_own_devices() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    write(
        &dir,
        "good.json",
        &spec_json("good.com/d", &[("ok", "A=1")]),
    );
    // Valid JSON, invalid spec: its kind is known.
    let bad = write(
        &dir,
        "bad.json",
        r#"{"cdiVersion": "0.6.0", "kind": "bad.com/d", "devices": [{"name": "x", "containerEdits": {"env": ["nope"]}}]}"#,
    );
    // Not even JSON: its kind is unknown.
    let garbage = write(&dir, "garbage.yaml", "kind: [unclosed\n");
    let reg = Registry::scan(std::slice::from_ref(&dir));
    assert_eq!(reg.broken().len(), 2);
    reg.resolve(&[req("good.com/d=ok")]).unwrap();
    let e = reg.resolve(&[req("bad.com/d=x")]).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, CdiError::BrokenFile { .. }), "{text}");
    assert!(
        text.contains("\"bad.com/d=x\"")
            && text.contains(&bad.display().to_string())
            && text.contains("not NAME=value"),
        "{text}"
    );
    let e = reg.resolve(&[req("other.com/d=y")]).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, CdiError::Unknown { .. }), "{text}");
    assert!(
        text.contains("\"other.com/d=y\"") && text.contains(&dir.display().to_string()),
        "{text}"
    );
    assert!(
        text.contains(&garbage.display().to_string()),
        "unparsable files are named: {text}"
    );
    let e = reg.resolve(&[req("not a name")]).unwrap_err();
    assert!(matches!(e, CdiError::InvalidName { .. }), "{e}");
    assert_eq!(e.field(), "config.cdi_devices[0].name");
    assert!(
        e.message()
            .starts_with("\"not a name\" is not a fully qualified"),
        "{}",
        e.message()
    );
}

#[test]
fn resolve_fills_device_nodes_from_the_host_and_applies_spec_edits_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let spec = json!({
        "cdiVersion": "0.5.0", "kind": "v.com/d",
        "containerEdits": {"env": ["SPEC=1"]},
        "devices": [
            {"name": "a", "containerEdits": {"deviceNodes": [{"path": "/dev/a", "hostPath": "/dev/null"}]}},
            {"name": "b", "containerEdits": {"deviceNodes": [{"path": "/dev/b", "hostPath": "/nonexistent/b", "type": "c", "major": 10, "minor": 200}]}},
            {"name": "gone", "containerEdits": {"deviceNodes": [{"path": "/dev/gone", "hostPath": "/nonexistent/gone"}]}},
            {"name": "file", "containerEdits": {"deviceNodes": [{"path": "/dev/file", "hostPath": "/etc/hostname"}]}},
            {"name": "blk", "containerEdits": {"deviceNodes": [{"path": "/dev/blk", "hostPath": "/dev/null", "type": "b"}]}}
        ]
    });
    let path = write(&dir, "v.json", &spec.to_string());
    let reg = Registry::scan(std::slice::from_ref(&dir));
    let out = reg
        .resolve(&[req("v.com/d=a"), req("v.com/d=b"), req("v.com/d=a")])
        .unwrap();
    assert_eq!(
        out.devices,
        vec!["v.com/d=a", "v.com/d=b"],
        "each device once"
    );
    assert_eq!(out.edits.len(), 3, "spec edits once, then each device's");
    assert_eq!(out.edits[0].env, vec!["SPEC=1"]);
    let a = &out.edits[1].device_nodes[0];
    assert_eq!(
        (a.typ.as_str(), a.major, a.minor),
        ("c", 1, 3),
        "read from /dev/null"
    );
    assert_eq!(a.file_mode, Some(0o666));
    let b = &out.edits[2].device_nodes[0];
    assert_eq!(
        (b.typ.as_str(), b.major, b.minor, b.file_mode),
        ("c", 10, 200, None),
        "fully described: the host node may be missing"
    );
    for (name, why) in [
        ("gone", "No such file"),
        ("file", "is not a device node"),
        ("blk", "of type \"b\" but the host node"),
    ] {
        let e = reg.resolve(&[req(&format!("v.com/d={name}"))]).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, CdiError::HostDevice { .. }), "{text}");
        assert!(
            text.contains(why) && text.contains(&path.display().to_string()) && text.contains(name),
            "{text}"
        );
    }
}

#[test]
fn net_devices_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    write(&dir, "n.json", &json!({"cdiVersion": "1.1.0", "kind": "v.com/net", "devices": [
        {"name": "eth", "containerEdits": {"netDevices": [{"hostInterfaceName": "eth9", "name": "net1"}]}}]}).to_string());
    let reg = Registry::scan(&[dir]);
    let e = reg.resolve(&[req("v.com/net=eth")]).unwrap_err();
    assert!(matches!(e, CdiError::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("netDevices"), "{e}");
}

#[test]
fn stamps_change_with_the_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = vec![tmp.path().join("a"), tmp.path().join("b")];
    let empty = registry::Stamp::of(&dirs);
    let p = write(&dirs[1], "x.json", "{}");
    let one = registry::Stamp::of(&dirs);
    assert_ne!(empty, one, "a new file in a directory created later");
    assert_eq!(one, registry::Stamp::of(&dirs));
    std::fs::write(&p, "{ }").unwrap();
    assert_ne!(one, registry::Stamp::of(&dirs), "rewritten");
    assert!(!registry::Stamp::of(&dirs).settled(), "just written");
    let old = std::fs::FileTimes::new()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(60));
    std::fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_times(old)
        .unwrap();
    assert!(registry::Stamp::of(&dirs).settled());
    std::fs::remove_file(&p).unwrap();
    assert_eq!(empty, registry::Stamp::of(&dirs));
    assert!(empty.settled());
}

fn base_spec(uid: u32) -> Spec {
    let process = ProcessBuilder::default()
        .args(vec!["sh".to_string()])
        .env(vec!["PATH=/bin".to_string(), "KEEP=1".to_string()])
        .user(UserBuilder::default().uid(uid).gid(uid).build().unwrap())
        .build()
        .unwrap();
    let linux = LinuxBuilder::default()
        .devices(vec![
            LinuxDeviceBuilder::default()
                .path("/dev/foo")
                .typ(LinuxDeviceType::C)
                .major(1)
                .minor(5)
                .build()
                .unwrap(),
        ])
        .build()
        .unwrap();
    let mounts = vec![
        MountBuilder::default()
            .destination("/proc")
            .typ("proc")
            .source("proc")
            .build()
            .unwrap(),
        MountBuilder::default()
            .destination("/data/sub")
            .source("/x")
            .build()
            .unwrap(),
        MountBuilder::default()
            .destination("/opt")
            .source("/old")
            .build()
            .unwrap(),
    ];
    SpecBuilder::default()
        .process(process)
        .linux(linux)
        .mounts(mounts)
        .build()
        .unwrap()
}

#[test]
fn edits_merge_into_the_oci_spec() {
    let edits = CdiEdits {
        devices: vec!["v.com/d=a".into()],
        edits: vec![
            ContainerEdits {
                env: vec!["PATH=/cdi/bin".into(), "NEW=2".into()],
                additional_gids: vec![0, 44, 44],
                ..Default::default()
            },
            ContainerEdits {
                device_nodes: vec![
                    DeviceNode {
                        path: "/dev/foo".into(),
                        typ: "c".into(),
                        major: 1,
                        minor: 3,
                        file_mode: Some(0o660),
                        permissions: "rw".into(),
                        ..Default::default()
                    },
                    DeviceNode {
                        path: "/dev/blk".into(),
                        typ: "b".into(),
                        major: 8,
                        minor: 1,
                        permissions: "none".into(),
                        uid: Some(7),
                        ..Default::default()
                    },
                    DeviceNode {
                        path: "/dev/fifo".into(),
                        typ: "p".into(),
                        ..Default::default()
                    },
                ],
                mounts: vec![
                    Mount {
                        host_path: "/host/data".into(),
                        container_path: "/data".into(),
                        options: vec!["bind".into(), "ro".into()],
                        ..Default::default()
                    },
                    Mount {
                        host_path: "/new".into(),
                        container_path: "/opt/".into(),
                        typ: "bind".into(),
                        options: vec!["rbind".into()],
                    },
                ],
                hooks: vec![
                    Hook {
                        hook_name: "createRuntime".into(),
                        path: "/usr/bin/hook".into(),
                        args: vec!["hook".into(), "x".into()],
                        timeout: Some(3),
                        ..Default::default()
                    },
                    Hook {
                        hook_name: "prestart".into(),
                        path: "/usr/bin/pre".into(),
                        ..Default::default()
                    },
                ],
                intel_rdt: Some(IntelRdt {
                    clos_id: "gold".into(),
                    l3_cache_schema: "L3:0=ff".into(),
                    ..Default::default()
                }),
                additional_gids: vec![45],
                ..Default::default()
            },
        ],
    };
    let mut spec = base_spec(1000);
    edits.apply(&mut spec).unwrap();
    let v = serde_json::to_value(&spec).unwrap();
    assert_eq!(
        v["process"]["env"],
        json!(["PATH=/cdi/bin", "KEEP=1", "NEW=2"])
    );
    assert_eq!(v["process"]["user"]["additionalGids"], json!([44, 45]));
    assert_eq!(
        v["linux"]["devices"],
        json!([
            {"path": "/dev/foo", "type": "c", "major": 1, "minor": 3, "fileMode": 0o660, "uid": 1000, "gid": 1000},
            {"path": "/dev/blk", "type": "b", "major": 8, "minor": 1, "uid": 7, "gid": 1000},
            {"path": "/dev/fifo", "type": "p", "major": 0, "minor": 0, "uid": 1000, "gid": 1000}
        ]),
        "a node at the same path is replaced; the owner defaults to the process's user"
    );
    assert_eq!(
        v["linux"]["resources"]["devices"],
        json!([
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw"},
            {"allow": true, "type": "b", "major": 8, "minor": 1, "access": ""}
        ])
    );
    let dests: Vec<&str> = v["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["destination"].as_str().unwrap())
        .collect();
    assert_eq!(
        dests,
        vec!["/proc", "/data", "/opt", "/data/sub"],
        "replaced at /opt, shallow first"
    );
    assert_eq!(v["mounts"][2]["source"], "/new");
    assert_eq!(v["mounts"][1]["options"], json!(["bind", "ro"]));
    assert_eq!(
        v["hooks"]["createRuntime"],
        json!([{"path": "/usr/bin/hook", "args": ["hook", "x"], "timeout": 3}])
    );
    assert_eq!(v["hooks"]["prestart"][0]["path"], "/usr/bin/pre");
    assert_eq!(
        v["linux"]["intelRdt"],
        json!({"closID": "gold", "l3CacheSchema": "L3:0=ff"})
    );

    // A root process: owners are left to the runtime (root).
    let mut spec = base_spec(0);
    edits.apply(&mut spec).unwrap();
    let v = serde_json::to_value(&spec).unwrap();
    assert!(
        v["linux"]["devices"][0].get("uid").is_none(),
        "{}",
        v["linux"]["devices"][0]
    );
    // No edits, no change.
    let mut spec = base_spec(0);
    let before = spec.clone();
    CdiEdits::default().apply(&mut spec).unwrap();
    assert_eq!(spec, before);
}
