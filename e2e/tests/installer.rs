//! The node install: `deploy/install.sh` against throw-away host roots (twice, then
//! with a changed binary, then on a host it cannot serve); the installer image built
//! by `deploy/build-installer-image.sh`, pushed to a loopback registry and run twice
//! by a real criusd as a privileged container with a host root at /host; an upgrade
//! of criusd over a running container; the DaemonSet manifests validated offline for
//! Kubernetes 1.33 to 1.37.
//!
//! PID 1 here is not systemd, so each host root gets a recording `systemctl` (a shell
//! script run by busybox in the chroot): a mock of the one part that cannot run here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crius_cri_api::v1 as cri;
use crius_e2e::*;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// A program of this machine, or a loud failure naming the package.
fn program(name: &str, package: &str) -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .unwrap();
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && !path.is_empty(),
        "{name} is missing: apt-get install {package}"
    );
    PathBuf::from(path)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// A host root that can run crius: runc and iptables (copies of this machine's),
/// busybox as /bin/sh, the recording systemctl, the roots' parents.
fn host_root(dir: &Path) {
    for d in ["usr/sbin", "bin", "var/lib", "run"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    for (name, package) in [("runc", "runc"), ("iptables", "iptables")] {
        std::fs::copy(program(name, package), dir.join("usr/sbin").join(name)).unwrap();
    }
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.is_file(),
        "/bin/busybox is missing: apt-get install busybox-static"
    );
    std::fs::copy(busybox, dir.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", dir.join("bin/sh")).unwrap();
    // is-active answers from /systemctl.active, as if the unit were running.
    let systemctl = dir.join("bin/systemctl");
    std::fs::write(
        &systemctl,
        "#!/bin/sh\necho \"$*\" >> /systemctl.log\n\
         case $1 in is-active) [ -e /systemctl.active ] ;; esac\n",
    )
    .unwrap();
    std::fs::set_permissions(&systemctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("systemctl.active"), "").unwrap();
}

fn systemctl_log(root: &Path) -> String {
    std::fs::read_to_string(root.join("systemctl.log")).unwrap_or_default()
}

struct Run {
    code: i32,
    out: String,
}

impl Run {
    /// The run exited 0.
    fn succeeded(&self) {
        assert_eq!(self.code, 0, "{}", self.out);
    }

    /// The run's output holds `text`.
    fn says(&self, text: impl AsRef<str>) {
        assert!(self.out.contains(text.as_ref()), "{}", self.out);
    }
}

fn install(root: &Path, criusd: &Path, shim: &Path, extra: &[&str]) -> Run {
    let out = Command::new(deploy().join("install.sh"))
        .arg("--host-root")
        .arg(root)
        .arg("--criusd")
        .arg(criusd)
        .arg("--shim")
        .arg(shim)
        .arg("--unit")
        .arg(deploy().join("crius.service"))
        .arg("--config")
        .arg(deploy().join("config.toml"))
        .args(extra)
        .output()
        .expect("running install.sh");
    Run {
        code: out.status.code().unwrap_or(-1),
        out: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// A byte-different copy of `bin` (one more byte at the end; it still runs): the
/// next version, as far as the installer can tell.
fn next_version(bin: &Path, to: &Path) -> PathBuf {
    let mut bytes = std::fs::read(bin).unwrap();
    bytes.push(0);
    std::fs::write(to, bytes).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
    to.to_path_buf()
}

/// Every file under `dir` whose name holds `needle`.
fn files_named(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                todo.push(p);
            } else if e.file_name().to_string_lossy().contains(needle) {
                out.push(p);
            }
        }
    }
    out
}

/// The four files under `root` hold what was installed, with their modes; returns
/// their paths (relative to `root`).
fn assert_installed(root: &Path, criusd: &Path, shim: &Path) -> [&'static str; 4] {
    let files = [
        ("usr/local/bin/criusd", criusd.to_path_buf(), 0o755),
        ("usr/local/bin/crius-shim", shim.to_path_buf(), 0o755),
        (
            "etc/systemd/system/crius.service",
            deploy().join("crius.service"),
            0o644,
        ),
        ("etc/crius/config.toml", deploy().join("config.toml"), 0o644),
    ];
    for (installed, source, m) in &files {
        let p = root.join(installed);
        assert!(
            std::fs::read(&p).unwrap() == std::fs::read(source).unwrap(),
            "{installed} differs from {}",
            source.display()
        );
        assert_eq!(mode(&p), *m, "{installed}");
    }
    files.map(|(installed, _, _)| installed)
}

#[test]
fn install_sh_installs_once_changes_nothing_twice_and_refuses_a_host_it_cannot_serve() {
    require_root();
    let scratch = unique_root("install-sh");
    let root = scratch.join("host");
    host_root(&root);
    let criusd = criusd_bin();
    let shim = bin_dir().join("crius-shim");

    let first = install(&root, &criusd, &shim, &[]);
    first.succeeded();
    first.says("crius can run on this host");
    for installed in assert_installed(&root, &criusd, &shim) {
        first.says(format!("installed: /{installed}"));
    }
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/crius.service")).unwrap();
    assert!(
        unit.contains("Type=notify") && unit.contains("KillMode=process"),
        "{unit}"
    );
    assert_eq!(
        systemctl_log(&root),
        "daemon-reload\nenable crius.service\nrestart crius.service\n"
    );

    // The operator edits the configuration; the same files again change nothing.
    let config = root.join("etc/crius/config.toml");
    let edited = format!(
        "{}\n# edited by the operator\n",
        std::fs::read_to_string(&config).unwrap()
    );
    std::fs::write(&config, &edited).unwrap();
    let second = install(&root, &criusd, &shim, &[]);
    second.succeeded();
    for f in [
        "usr/local/bin/criusd",
        "usr/local/bin/crius-shim",
        "etc/systemd/system/crius.service",
    ] {
        second.says(format!("unchanged: /{f}"));
    }
    second.says("kept: /etc/crius/config.toml");
    second.says("was not restarted");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);
    assert_eq!(
        systemctl_log(&root),
        "daemon-reload\nenable crius.service\nrestart crius.service\n\
         is-active --quiet crius.service\n"
    );

    // Not running and unchanged: started, not restarted.
    std::fs::remove_file(root.join("systemctl.active")).unwrap();
    std::fs::remove_file(root.join("systemctl.log")).unwrap();
    let third = install(&root, &criusd, &shim, &[]);
    third.succeeded();
    assert_eq!(
        systemctl_log(&root),
        "is-active --quiet crius.service\nenable crius.service\nstart crius.service\n"
    );

    // A new criusd: replaced (by rename: a new inode), the rest unchanged, restarted.
    let old_inode = std::os::unix::fs::MetadataExt::ino(
        &std::fs::metadata(root.join("usr/local/bin/criusd")).unwrap(),
    );
    let next = next_version(&criusd, &scratch.join("criusd-next"));
    std::fs::remove_file(root.join("systemctl.log")).unwrap();
    let upgrade = install(&root, &next, &shim, &[]);
    upgrade.succeeded();
    upgrade.says("installed: /usr/local/bin/criusd");
    upgrade.says("unchanged: /usr/local/bin/crius-shim");
    let new = std::fs::metadata(root.join("usr/local/bin/criusd")).unwrap();
    assert_ne!(std::os::unix::fs::MetadataExt::ino(&new), old_inode);
    assert!(
        std::fs::read(root.join("usr/local/bin/criusd")).unwrap() == std::fs::read(&next).unwrap()
    );
    assert!(systemctl_log(&root).contains("restart crius.service"));
    assert!(files_named(&root, "crius-install").is_empty());

    // --no-systemd: files only.
    std::fs::remove_file(root.join("systemctl.log")).unwrap();
    let files_only = install(&root, &criusd, &shim, &["--no-systemd"]);
    files_only.succeeded();
    files_only.says("systemd not touched");
    assert_eq!(systemctl_log(&root), "");

    // A host without runc: refused before anything is written, the row named.
    let bare = scratch.join("bare");
    host_root(&bare);
    std::fs::remove_file(bare.join("usr/sbin/runc")).unwrap();
    let refused = install(&bare, &criusd, &shim, &[]);
    assert_eq!(refused.code, 1, "{}", refused.out);
    refused.says("refusing to install");
    let row = refused
        .out
        .lines()
        .find(|l| l.contains("runc") && l.contains("FAIL"))
        .unwrap_or_else(|| panic!("no FAIL row for runc: {}", refused.out));
    assert!(row.contains("not found"), "{row}");
    assert!(!bare.join("usr/local/bin/criusd").exists());
    assert_eq!(systemctl_log(&bare), "");

    std::fs::remove_dir_all(&scratch).unwrap();
}

/// `bin` without its debug information, into `dir` (the debug build's criusd is
/// hundreds of MiB; the image need not carry that).
fn stripped(bin: &Path, dir: &Path) -> PathBuf {
    let to = dir.join(bin.file_name().unwrap());
    let strip = program("strip", "binutils");
    let st = Command::new(strip)
        .arg("-o")
        .arg(&to)
        .arg(bin)
        .status()
        .unwrap();
    assert!(st.success(), "strip {}", bin.display());
    to
}

#[tokio::test(flavor = "multi_thread")]
async fn the_installer_image_runs_under_crius_twice_and_the_second_run_changes_nothing() {
    program("umoci", "umoci");
    program("skopeo", "skopeo");
    let mut f = Fixture::start("installer-img", Options::default()).await;
    f.start_registry().await;
    let registry = f.registry().host.clone();

    let bins = f.path("bins");
    std::fs::create_dir_all(&bins).unwrap();
    let criusd = stripped(&criusd_bin(), &bins);
    let shim = stripped(&bin_dir().join("crius-shim"), &bins);
    let image = format!("{registry}/crius/installer:test");
    let out = Command::new(deploy().join("build-installer-image.sh"))
        .arg("--criusd")
        .arg(&criusd)
        .arg("--shim")
        .arg(&shim)
        .arg("--out")
        .arg(f.path("oci"))
        .args(["--tag", "test", "--insecure", "--push"])
        .arg(format!("docker://{image}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "build-installer-image.sh: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    f.pull(&image).await;

    let host = f.path("host");
    host_root(&host);
    let pod = f
        .pod(
            PodBuilder::new("installer")
                .privileged()
                .log_directory(f.logs()),
        )
        .await;
    for (round, name) in ["install-1", "install-2"].into_iter().enumerate() {
        let ctr = ContainerBuilder::new(name, &image)
            .privileged()
            .bind(&host, "/host")
            .log_path(&format!("{name}.log"));
        let id = f.run(&pod, ctr).await;
        let log = eventually(DEADLINE, "the installer to finish", || {
            let log = f.log_of(name);
            async move { log.contains("install done").then_some(log) }
        })
        .await;
        assert!(log.contains("crius can run on this host"), "{log}");
        if round == 0 {
            assert!(log.contains("installed: /usr/local/bin/criusd"), "{log}");
            assert!(log.contains("crius restarted"), "{log}");
        } else {
            assert!(log.contains("unchanged: /usr/local/bin/criusd"), "{log}");
            assert!(log.contains("kept: /etc/crius/config.toml"), "{log}");
            assert!(log.contains("was not restarted"), "{log}");
        }
        // It stays, as a DaemonSet's pod must, until stopped; SIGTERM ends it cleanly.
        assert_eq!(
            f.status(&id).await.state,
            cri::ContainerState::ContainerRunning as i32
        );
        f.stop_container(&id, 10).await;
        assert_eq!(f.status(&id).await.exit_code, 0);
        f.remove_container(&id).await;
    }
    assert_installed(&host, &criusd, &shim);
    assert_eq!(
        systemctl_log(&host),
        "daemon-reload\nenable crius.service\nrestart crius.service\n\
         is-active --quiet crius.service\n"
    );
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_restarts_criusd_from_the_installed_binary_and_the_container_runs_on() {
    let (mut f, image, pod) = Fixture::with_busybox_pod("installer-up", Options::default()).await;
    let id = f
        .run(
            &pod,
            ContainerBuilder::new("app", &image)
                .command(["/bin/sleep", "100000"])
                .no_log(),
        )
        .await;
    let before = processes_mentioning(&id);
    assert!(!before.is_empty(), "the container's shim");

    let host = f.path("host");
    host_root(&host);
    let shim = bin_dir().join("crius-shim");
    let first = install(&host, &criusd_bin(), &shim, &["--no-systemd"]);
    first.succeeded();
    let next = next_version(&criusd_bin(), &f.path("criusd-next"));
    let upgrade = install(&host, &next, &shim, &["--no-systemd"]);
    upgrade.succeeded();
    upgrade.says("installed: /usr/local/bin/criusd");

    // What `systemctl restart crius` does: SIGTERM, then the unit's ExecStart.
    f.d.stop().await.expect("stopping the old criusd");
    f.d.set_binary(host.join("usr/local/bin/criusd"));
    f.d.spawn().await.expect("starting the installed criusd");
    let exe = std::fs::read_link(format!("/proc/{}/exe", f.d.pid().unwrap())).unwrap();
    assert_eq!(exe, host.join("usr/local/bin/criusd"));

    assert_eq!(
        processes_mentioning(&id),
        before,
        "the shim and container ran on"
    );
    let st = f.status(&id).await;
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);
    let listed = list_containers(&mut f.d.rt, None).await;
    assert!(listed.iter().any(|c| c.id == id), "{listed:?}");
    let ps = f.exec(&id, "echo alive").await;
    assert_eq!(String::from_utf8_lossy(&ps.stdout), "alive\n");
    f.stop_container(&id, 5).await;
    f.remove_container(&id).await;
    eventually(DEADLINE, "the shim to be gone", || {
        let left = processes_mentioning(&id);
        async move { left.is_empty().then_some(()) }
    })
    .await;
    f.finish().await;
}

fn validate(file: &Path, version: &str) -> (bool, String) {
    let out = Command::new("python3")
        .args([
            "-m",
            "kubernetes_validate",
            "--strict",
            "--kubernetes-version",
            version,
        ])
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("python3 is missing ({e})"));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !text.contains("No module named kubernetes_validate"),
        "kubernetes-validate is missing: pip install kubernetes-validate"
    );
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_manifests_validate_for_kubernetes_1_33_to_1_37_and_a_wrong_field_fails() {
    let manifest = deploy().join("kubernetes/crius.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    for kind in ["kind: Namespace", "kind: ServiceAccount", "kind: DaemonSet"] {
        assert!(text.contains(kind), "{kind}");
    }
    for version in ["1.33.0", "1.34.0", "1.35.0", "1.36.0", "1.37.0"] {
        let (ok, out) = validate(&manifest, version);
        assert!(ok, "{version}: {out}");
        assert_eq!(out.matches("passed").count(), 3, "{version}: {out}");
    }
    // The validator does catch a misspelt field.
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.yaml");
    std::fs::write(&wrong, text.replace("hostPath:", "hostPth:")).unwrap();
    let (ok, out) = validate(&wrong, "1.36.0");
    assert!(!ok, "{out}");
}
