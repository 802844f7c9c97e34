//! [`Namespaces`] through the namespace helper (`criusd pinns`, `criusd infra`): a
//! fresh single-threaded process does the `unshare`, since the daemon's threads
//! cannot (see `crate::pinns`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::Namespaces;
use crate::error::{CriError, CriResult};
use crate::pinns::{self, PARENT_ENV, PinError, PinRequest};

/// How long the namespace helper may take.
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a killed infra process may take to go.
const INFRA_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The real namespace pinner.
pub struct HelperNamespaces {
    /// The helper binary (criusd itself unless configured).
    pub helper: PathBuf,
    /// Whether pods may have their own user namespace (set by
    /// [`HelperNamespaces::probe_user_namespaces`]).
    pub user_namespaces: std::sync::atomic::AtomicBool,
}

fn pin_err(context: &str) -> impl FnOnce(PinError) -> CriError + '_ {
    move |source| CriError::Pin {
        context: context.to_string(),
        source,
    }
}

impl HelperNamespaces {
    pub fn new(helper: PathBuf) -> HelperNamespaces {
        HelperNamespaces {
            helper,
            user_namespaces: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Finds out whether a pod can have its own user namespace here, and records it:
    /// the helper makes one (mapping root to an id no one uses), and an idmapped clone
    /// of a directory in `scratch` (on the file system of the container layers) must
    /// show the directory's owner (0) as that id. Everything the probe makes is gone
    /// afterwards.
    pub async fn probe_user_namespaces(&self, scratch: &Path) -> Result<(), String> {
        let result = self.probe_in(scratch).await;
        let _ = pinns::unpin(&scratch.join("ns"));
        let _ = std::fs::remove_dir(scratch.join("mapped"));
        let _ = std::fs::remove_dir(scratch.join("source"));
        let _ = std::fs::remove_dir(scratch);
        self.user_namespaces
            .store(result.is_ok(), std::sync::atomic::Ordering::Relaxed);
        result
    }

    async fn probe_in(&self, scratch: &Path) -> Result<(), String> {
        const PROBE_ID: u32 = 0xFFFF_0000;
        let (source, mapped) = (scratch.join("source"), scratch.join("mapped"));
        for d in [&source, &mapped] {
            std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
        }
        std::os::unix::fs::chown(&source, Some(0), Some(0))
            .map_err(|e| format!("chown {}: {e}", source.display()))?;
        let map = pinns::IdMap {
            container: 0,
            host: PROBE_ID,
            size: 1,
        };
        let req = PinRequest {
            dir: scratch.join("ns"),
            user: Some(pinns::UserMaps {
                uids: vec![map],
                gids: vec![map],
            }),
            ..Default::default()
        };
        let args: Vec<OsString> = req.to_args().into_iter().map(Into::into).collect();
        self.run(&args, "namespace helper")
            .await
            .map_err(|e| format!("making a user namespace: {e}"))?;
        let userns = std::fs::File::open(PinRequest::path(&req.dir, "user"))
            .map_err(|e| format!("opening the pinned user namespace: {e}"))?;
        let bound =
            crate::sys::bind_idmapped(&source, &mapped, std::os::fd::AsFd::as_fd(&userns), true);
        let owner = std::os::unix::fs::MetadataExt::uid(
            &std::fs::metadata(&mapped).map_err(|e| format!("stat {}: {e}", mapped.display()))?,
        );
        let _ = nix::mount::umount2(&mapped, nix::mount::MntFlags::MNT_DETACH);
        bound.map_err(|e| format!("an idmapped mount of {}: {e}", source.display()))?;
        if owner != PROBE_ID {
            return Err(format!(
                "an idmapped mount showed owner {owner}, not {PROBE_ID}"
            ));
        }
        Ok(())
    }

    /// Runs the helper with `args` and waits for it, up to [`HELPER_TIMEOUT`]. The
    /// helper learns the daemon's pid (see `pinns::run_helper`); a failure carries
    /// its stderr.
    async fn run(&self, args: &[OsString], what: &'static str) -> Result<(), PinError> {
        let helper = self.helper.clone();
        let child = tokio::process::Command::new(&helper)
            .args(args)
            .env(PARENT_ENV, std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| PinError::Spawn {
                what,
                helper: helper.clone(),
                source,
            })?;
        let out = tokio::time::timeout(HELPER_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| PinError::Timeout {
                what,
                helper: helper.clone(),
                timeout: HELPER_TIMEOUT,
            })?
            .map_err(|source| PinError::Io {
                context: format!("waiting for the {what}"),
                source,
            })?;
        if out.status.success() {
            return Ok(());
        }
        Err(PinError::Failed {
            what,
            helper,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }

    async fn infra(&self, dir: &Path, userns: Option<&Path>) -> Result<u32, PinError> {
        let io = |context: String| move |source| PinError::Io { context, source };
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        let pidfile = dir.join("infra.pid");
        let mut args: Vec<OsString> = vec![
            "infra".into(),
            "--pidfile".into(),
            pidfile.clone().into_os_string(),
        ];
        if let Some(u) = userns {
            args.push("--userns".into());
            args.push(u.as_os_str().to_owned());
        }
        self.run(&args, "infra helper").await?;
        let text = std::fs::read_to_string(&pidfile)
            .map_err(io(format!("reading {}", pidfile.display())))?;
        let _ = std::fs::remove_file(&pidfile);
        text.trim().parse().map_err(|_| PinError::BadPid { text })
    }
}

impl Namespaces for HelperNamespaces {
    fn pin<'a>(&'a self, req: &'a PinRequest) -> BoxFuture<'a, CriResult<()>> {
        Box::pin(async move {
            let args: Vec<OsString> = req.to_args().into_iter().map(Into::into).collect();
            let result = self.run(&args, "namespace helper").await;
            if result.is_err() {
                // A helper that failed (or was killed at the timeout) may have pinned
                // some namespaces before it went: the step leaves nothing of itself.
                if let Err(e) = pinns::unpin(&req.dir) {
                    tracing::warn!(dir = %req.dir.display(), error = %e, "releasing what a failed namespace helper pinned");
                }
            }
            result.map_err(pin_err("pinning pod namespaces"))
        })
    }

    fn user_namespaces(&self) -> bool {
        self.user_namespaces
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn unpin(&self, dir: &Path) -> CriResult<()> {
        pinns::unpin(dir).map_err(CriError::io(format!(
            "releasing the pod namespaces pinned in {}",
            dir.display()
        )))
    }

    fn start_infra<'a>(
        &'a self,
        dir: &'a Path,
        userns: Option<&'a Path>,
    ) -> BoxFuture<'a, CriResult<u32>> {
        Box::pin(async move {
            self.infra(dir, userns)
                .await
                .map_err(pin_err("starting the pod's infra process"))
        })
    }

    fn stop_infra<'a>(&'a self, pid: u32, dir: &'a Path) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if !pinns::infra_alive(pid, dir) {
                return;
            }
            if let Ok(p) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let deadline = tokio::time::Instant::now() + INFRA_STOP_TIMEOUT;
            while pinns::infra_alive(pid, dir) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    }

    fn is_pinned(&self, path: &Path) -> bool {
        pinns::is_pinned(path)
    }

    fn infra_alive(&self, pid: u32, dir: &Path) -> bool {
        pinns::infra_alive(pid, dir)
    }
}
