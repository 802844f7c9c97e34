//! What each runtime handler can do for a container, probed once at start-up:
//! recursive read-only mounts (`Mount.recursive_read_only`, reported per handler in
//! `RuntimeHandlerFeatures.recursive_read_only_mounts`).
//!
//! A runtime that declares the `rro` mount option in `<runtime> features` (runc 1.1
//! and later) is handed `rro` and does it itself. For one that does not say (crun
//! 1.8.1 has no `features` command), crius makes the mount itself when the kernel has
//! mount_setattr(2): a read-only clone of the host path and every mount under it, in
//! the bundle (`rro/<index>`), which the runtime binds read-only (a bind keeps each
//! submount's read-only flag). Without either, such a mount is refused.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tracing::{info, warn};

/// How a handler gets recursive read-only mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecursiveReadOnly {
    /// The runtime knows the `rro` mount option.
    Runtime,
    /// crius clones the mount tree read-only and the runtime binds the clone.
    Crius,
    /// Neither: refused.
    #[default]
    Unsupported,
}

impl RecursiveReadOnly {
    pub fn works(self) -> bool {
        self != RecursiveReadOnly::Unsupported
    }
}

/// How long `<runtime> features` may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `<runtime> features` lists `rro` among its mount options. Any failure
/// (no such command, no JSON, a timeout) is "it does not say".
pub fn runtime_declares_rro(runtime: &Path) -> bool {
    let Ok(mut child) = Command::new(runtime)
        .arg("features")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let deadline = Instant::now() + PROBE_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
    let mut out = Vec::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = std::io::Read::read_to_end(&mut stdout, &mut out);
    }
    declares_rro(&out)
}

/// Whether a `features` document lists `rro` in `mountOptions`.
pub fn declares_rro(features_json: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(features_json)
        .ok()
        .and_then(|v| {
            v.get("mountOptions")?
                .as_array()
                .map(|o| o.iter().any(|o| o.as_str() == Some("rro")))
        })
        .unwrap_or(false)
}

/// The choice for one handler, from what its runtime declares and what the kernel has.
pub fn choose(runtime_declares: bool, kernel_has_mount_setattr: bool) -> RecursiveReadOnly {
    match (runtime_declares, kernel_has_mount_setattr) {
        (true, _) => RecursiveReadOnly::Runtime,
        (false, true) => RecursiveReadOnly::Crius,
        (false, false) => RecursiveReadOnly::Unsupported,
    }
}

/// Probes every configured handler (name → runtime binary). Blocking.
pub fn probe(handlers: &HashMap<String, std::path::PathBuf>) -> HashMap<String, RecursiveReadOnly> {
    let kernel = crate::sys::has_mount_setattr();
    handlers
        .iter()
        .map(|(name, path)| {
            let declares = crate::util::find_binary(path).is_some_and(|p| runtime_declares_rro(&p));
            let how = choose(declares, kernel);
            if how.works() {
                info!(handler = %name, runtime = %path.display(), recursive_read_only = ?how, "runtime handler features");
            } else {
                warn!(handler = %name, runtime = %path.display(), "recursive read-only mounts are not possible with this handler (the runtime does not declare rro and the kernel lacks mount_setattr)");
            }
            (name.clone(), how)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rro_comes_from_the_features_document() {
        assert!(declares_rro(
            br#"{"ociVersionMin":"1.0.0","mountOptions":["ro","rro","rbind"]}"#
        ));
        assert!(!declares_rro(br#"{"mountOptions":["ro","rbind"]}"#));
        assert!(!declares_rro(br#"{"hooks":[]}"#));
        assert!(!declares_rro(b"unknown command features\n"));
        assert!(!declares_rro(b""));
        assert_eq!(choose(true, false), RecursiveReadOnly::Runtime);
        assert_eq!(choose(true, true), RecursiveReadOnly::Runtime);
        assert_eq!(choose(false, true), RecursiveReadOnly::Crius);
        assert_eq!(choose(false, false), RecursiveReadOnly::Unsupported);
        assert!(!RecursiveReadOnly::default().works());
    }

    #[test]
    fn a_runtime_without_features_declares_nothing() {
        assert!(!runtime_declares_rro(Path::new("/bin/false")));
        assert!(!runtime_declares_rro(Path::new("/nonexistent/runtime")));
    }
}
