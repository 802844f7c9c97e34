//! CDI devices through criusd on real runc and crun: spec files written (after the
//! daemon started) into a spec directory of the test's own, a device node made with
//! mknod, a mount and an environment variable the container sees, asked for through
//! `cdi_devices` and through a `cdi.k8s.io/` annotation; an unknown device refused
//! naming it, leaving nothing behind; `crictl info`'s view of the devices.
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use crius_e2e::v1 as cri;
use crius_e2e::*;
use tonic::Code;

/// The spec directories of the test daemon: a static one (empty) and the one the
/// test writes, both under the test's fixtures.
const CDI_CONFIG: &str =
    "[cdi]\nspec_dirs = [\"{root}/fixtures/cdi-static\", \"{root}/fixtures/cdi\"]\n";

/// A char device node with /dev/null's numbers (1:3) at `path`.
fn make_null_node(path: &Path) {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    mknod(
        path,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(1, 3),
    )
    .unwrap_or_else(|e| panic!("mknod {}: {e}", path.display()));
}

/// The container's config asking for nothing yet.
fn sleeper(name: &str, image: &str) -> cri::ContainerConfig {
    ContainerBuilder::new(name, image).sh("sleep 1000").build()
}

/// Runs `script` in the container and returns its stdout (it must exit 0).
async fn sh(f: &mut Fixture, id: &str, script: &str) -> String {
    let r = f.exec(id, script).await;
    assert_eq!(
        r.exit_code,
        0,
        "{script}: {}{}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
    String::from_utf8_lossy(&r.stdout).into_owned()
}

/// What the container of `id` sees of the device: the node, the mounted file, the
/// variable `var`.
async fn sees_the_device(f: &mut Fixture, id: &str, var: &str) {
    sh(f, id, "test -c /dev/foo").await;
    // It is /dev/null (1:3) and the cgroup lets the container use it.
    assert_eq!(
        sh(f, id, "echo x > /dev/foo && wc -c < /dev/foo")
            .await
            .trim(),
        "0"
    );
    assert_eq!(
        sh(f, id, "cat /cdi-data/hello").await,
        "from the CDI mount\n"
    );
    let env = sh(f, id, "env").await;
    assert!(env.lines().any(|l| l == var), "{var} in {env}");
    assert!(env.lines().any(|l| l == "CDI_SPEC=common"), "{env}");
}

async fn cdi_devices_reach_the_container(runtime: Runtime) {
    let opts = Options::config(CDI_CONFIG).with_runtime(runtime);
    let (mut f, image, pod) = Fixture::with_busybox_pod("cdi", opts).await;
    let node = f.path("dev/foo");
    make_null_node(&node);
    let data = f.path("cdi-data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("hello"), "from the CDI mount\n").unwrap();
    let spec_dir = f.path("cdi");

    // Before any spec file exists: unknown, refused naming the device; nothing made.
    let mut unknown = sleeper("unknown", &image);
    unknown.cdi_devices = vec![cri::CdiDevice {
        name: "vendor.example.com/device=foo".into(),
    }];
    let err = f.create(&pod, unknown.clone()).await.unwrap_err();
    assert_refused(&err, Code::InvalidArgument, "vendor.example.com/device=foo");
    assert!(
        err.message().contains("config.cdi_devices[0].name"),
        "{err}"
    );
    assert!(list_containers(&mut f.d.rt, None).await.is_empty());
    let bundles: Vec<_> = std::fs::read_dir(f.d.run_dir().join("containers"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(bundles.is_empty(), "no bundle left: {bundles:?}");
    // A malformed name is refused at validation.
    let mut malformed = sleeper("malformed", &image);
    malformed.cdi_devices = vec![cri::CdiDevice { name: "foo".into() }];
    let err = f.create(&pod, malformed).await.unwrap_err();
    assert_refused(&err, Code::InvalidArgument, "config.cdi_devices[0].name");

    // Written after the daemon started: JSON for foo, YAML for bar, both with the
    // spec-level edit CDI_SPEC=common.
    std::fs::create_dir_all(&spec_dir).unwrap();
    let edits = |var: &str| {
        serde_json::json!({
            "env": [var],
            "deviceNodes": [{"path": "/dev/foo", "hostPath": node, "permissions": "rw"}],
            "mounts": [{"hostPath": data, "containerPath": "/cdi-data", "options": ["rbind", "ro"]}],
        })
    };
    // foo also has a createRuntime hook, run by the runtime on the host. It reads the
    // container's state from its stdin first, as OCI hooks do: crun 1.8 dies of
    // SIGPIPE when a hook exits before it has written the state.
    let hook_mark = f.path("hook-ran");
    let mut foo_edits = edits("CDI_FOO=bar");
    foo_edits["hooks"] = serde_json::json!([{
        "hookName": "createRuntime",
        "path": "/bin/sh",
        "args": ["sh", "-c", format!("cat > /dev/null; echo ran >> {}", hook_mark.display())],
        "timeout": 10,
    }]);
    let foo_spec = serde_json::json!({
        "cdiVersion": "0.6.0",
        "kind": "vendor.example.com/device",
        "containerEdits": {"env": ["CDI_SPEC=common"]},
        "devices": [{"name": "foo", "containerEdits": foo_edits}],
    });
    std::fs::write(spec_dir.join("foo.json"), foo_spec.to_string()).unwrap();
    let bar_spec = format!(
        "cdiVersion: \"0.6.0\"\nkind: vendor.example.com/other\ncontainerEdits:\n  env: [CDI_SPEC=common]\ndevices:\n  - name: bar\n    containerEdits:\n      env: [CDI_BAR=baz]\n      deviceNodes:\n        - path: /dev/foo\n          hostPath: {}\n      mounts:\n        - hostPath: {}\n          containerPath: /cdi-data\n          options: [rbind, ro]\n",
        node.display(),
        data.display()
    );
    std::fs::write(spec_dir.join("bar.yaml"), bar_spec).unwrap();
    // A broken file of another vendor breaks nothing else.
    std::fs::write(spec_dir.join("broken.json"), "{\"cdiVersion\": ").unwrap();

    unknown.metadata.as_mut().unwrap().name = "by-field".into();
    unknown.log_path = "by-field.log".into();
    let by_field = f
        .create(&pod, unknown)
        .await
        .expect("CreateContainer via cdi_devices");
    f.start_container(&by_field).await;
    sees_the_device(&mut f, &by_field, "CDI_FOO=bar").await;
    assert_eq!(
        std::fs::read_to_string(&hook_mark).unwrap_or_default(),
        "ran\n",
        "the device's createRuntime hook ran once"
    );

    let mut annotated = sleeper("by-annotation", &image);
    annotated.annotations.insert(
        "cdi.k8s.io/test-bar".into(),
        "vendor.example.com/other=bar".into(),
    );
    let by_annotation = f
        .create(&pod, annotated)
        .await
        .expect("CreateContainer via annotation");
    f.start_container(&by_annotation).await;
    sees_the_device(&mut f, &by_annotation, "CDI_BAR=baz").await;
    let env = sh(&mut f, &by_annotation, "env").await;
    assert!(!env.contains("CDI_FOO"), "only the device asked for: {env}");
    assert_eq!(
        std::fs::read_to_string(&hook_mark).unwrap_or_default(),
        "ran\n",
        "bar has no hook"
    );

    // crictl info: the devices known, the file that failed.
    let info =
        f.d.rt
            .status(cri::StatusRequest { verbose: true })
            .await
            .expect("Status")
            .into_inner()
            .info;
    let cdi: serde_json::Value = serde_json::from_str(&info["cdi"]).unwrap();
    let names: Vec<&str> = cdi["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "vendor.example.com/device=foo",
            "vendor.example.com/other=bar"
        ],
        "{cdi}"
    );
    let errors = cdi["specFileErrors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{cdi}");
    assert!(
        errors[0]["specFile"]
            .as_str()
            .unwrap()
            .ends_with("broken.json"),
        "{cdi}"
    );

    // Still unknown (another name of a known kind): refused, nothing left.
    let mut nope = sleeper("nope", &image);
    nope.annotations.insert(
        "cdi.k8s.io/nope".into(),
        "vendor.example.com/device=nope".into(),
    );
    let err = f.create(&pod, nope).await.unwrap_err();
    assert_refused(
        &err,
        Code::InvalidArgument,
        "vendor.example.com/device=nope",
    );
    assert!(
        err.message().contains("broken.json"),
        "the file that failed to load is named: {err}"
    );
    let listed = list_containers(&mut f.d.rt, None).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    let bundles = std::fs::read_dir(f.d.run_dir().join("containers"))
        .unwrap()
        .count();
    assert_eq!(bundles, 2, "only the two containers' bundles");

    // A changed file is read again: foo's variable now has another value, and a
    // device at the same priority in a new file is ambiguous.
    let mut changed = foo_spec.clone();
    changed["devices"][0]["containerEdits"]["env"] = serde_json::json!(["CDI_FOO=changed"]);
    std::fs::write(spec_dir.join("foo.json"), changed.to_string()).unwrap();
    let mut again = sleeper("changed", &image);
    again.cdi_devices = vec![cri::CdiDevice {
        name: "vendor.example.com/device=foo".into(),
    }];
    let id = f
        .create(&pod, again.clone())
        .await
        .expect("CreateContainer after the change");
    f.start_container(&id).await;
    let env = sh(&mut f, &id, "env").await;
    assert!(env.lines().any(|l| l == "CDI_FOO=changed"), "{env}");
    std::fs::write(spec_dir.join("foo-again.json"), changed.to_string()).unwrap();
    again.metadata.as_mut().unwrap().name = "ambiguous".into();
    let err = f.create(&pod, again).await.unwrap_err();
    assert_refused(&err, Code::InvalidArgument, "is ambiguous");
    assert!(err.message().contains("foo-again.json"), "{err}");
    f.finish().await;
}

crius_testkit::runtime_matrix!(tokio: cdi_devices_reach_the_container);
