//! Test-only helpers shared by crius's suites (the shim's integration tests and the
//! end-to-end suite): the OCI runtimes a test runs under, and [`runtime_matrix!`],
//! which turns one test function into a `runc` test and a `crun` test.
//!
//! No dependencies: this crate is linked only into test and benchmark builds.
//!
//! Invariants:
//! - A [`Runtime`] names one of the two runtimes crius supports; tests get it by
//!   value from [`runtime_matrix!`] and never build one from a string.
//! - [`Runtime::executable_in`] always hands back the real runtime doing the work;
//!   for crun that is through a wrapper that only changes the mount namespace it
//!   runs in (see there why).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// An OCI runtime a test runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Runtime {
    /// runc: crius's default runtime (the CRI's empty handler).
    #[default]
    Runc,
    /// crun: the `crun` runtime handler.
    Crun,
}

/// Where [`Runtime::installed`] looks for a runtime binary, in order.
const SEARCH_PATH: &[&str] = &["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"];

impl Runtime {
    /// Both runtimes, runc first.
    pub const ALL: [Runtime; 2] = [Runtime::Runc, Runtime::Crun];

    /// The runtime's binary name: `"runc"` or `"crun"` (what the shim is handed).
    pub fn binary(self) -> &'static str {
        match self {
            Runtime::Runc => "runc",
            Runtime::Crun => "crun",
        }
    }

    /// The CRI runtime handler that selects this runtime in criusd: `""` (the
    /// default handler, runc) or `"crun"`.
    pub fn handler(self) -> &'static str {
        match self {
            Runtime::Runc => "",
            Runtime::Crun => "crun",
        }
    }

    /// The installed binary, from the usual system directories; `None` when the
    /// runtime is not installed.
    pub fn installed(self) -> Option<PathBuf> {
        SEARCH_PATH
            .iter()
            .map(|dir| Path::new(dir).join(self.binary()))
            .find(|p| p.is_file())
    }

    /// The executable to hand a shim or a daemon on this host, writing what it needs
    /// into `dir`.
    ///
    /// runc is used as installed. crun 1.8.1 (Debian 12) refuses to run at all on a
    /// hybrid cgroup host ("cgroups in hybrid mode not supported, drop all
    /// controllers from cgroupv2": hugetlb stays on the cgroup2 mount), even with
    /// `--cgroup-manager=disabled`. Rather than change the shared host, crun runs
    /// through a wrapper script (`dir/crun-v1`) that unmounts
    /// /sys/fs/cgroup/unified in a private mount namespace, so that crun sees a pure
    /// cgroup v1 host; it is still the real crun doing everything.
    ///
    /// Fails with `NotFound` when the runtime is not installed.
    pub fn executable_in(self, dir: &Path) -> io::Result<PathBuf> {
        let real = self.installed().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "the OCI runtime {self} is not installed (looked in {})",
                    SEARCH_PATH.join(", ")
                ),
            )
        })?;
        if self == Runtime::Runc {
            return Ok(real);
        }
        let wrapper = dir.join("crun-v1");
        let script = format!(
            "#!/bin/sh\nexec unshare --mount --propagation private /bin/sh -c \
             'umount /sys/fs/cgroup/unified 2>/dev/null; exec {} \"$@\"' crun \"$@\"\n",
            real.display()
        );
        std::fs::create_dir_all(dir)?;
        std::fs::write(&wrapper, script)?;
        let mut perm = std::fs::metadata(&wrapper)?.permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(&wrapper, perm)?;
        Ok(wrapper)
    }
}

impl fmt::Display for Runtime {
    /// The binary name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.binary())
    }
}

/// For each listed test function `name(runtime: Runtime)`, generates a module `name`
/// with two tests, `name::runc` and `name::crun`, each calling `name` with its
/// [`Runtime`].
///
/// - `runtime_matrix!(sync: a, b)` makes plain `#[test]`s of sync functions;
/// - `runtime_matrix!(tokio: a, b)` makes `#[tokio::test(flavor = "multi_thread")]`s
///   of async functions, awaiting them (the calling crate depends on `tokio` with
///   its `macros` and `rt-multi-thread` features).
///
/// ```
/// fn exit_codes(runtime: crius_testkit::Runtime) {
///     assert!(["runc", "crun"].contains(&runtime.binary()));
/// }
/// // Tests `exit_codes::runc` and `exit_codes::crun`.
/// crius_testkit::runtime_matrix!(sync: exit_codes);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! runtime_matrix {
    (sync: $($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[test]
                fn runc() {
                    super::$name($crate::Runtime::Runc)
                }
                #[test]
                fn crun() {
                    super::$name($crate::Runtime::Crun)
                }
            }
        )+
    };
    (tokio: $($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[::tokio::test(flavor = "multi_thread")]
                async fn runc() {
                    super::$name($crate::Runtime::Runc).await
                }
                #[::tokio::test(flavor = "multi_thread")]
                async fn crun() {
                    super::$name($crate::Runtime::Crun).await
                }
            }
        )+
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_handlers() {
        assert_eq!(
            Runtime::ALL.map(Runtime::binary),
            ["runc", "crun"],
            "binary names"
        );
        assert_eq!(Runtime::ALL.map(Runtime::handler), ["", "crun"], "handlers");
        assert_eq!(Runtime::Crun.to_string(), "crun");
        assert_eq!(Runtime::default(), Runtime::Runc);
    }

    fn record(runtime: Runtime) {
        // Each generated test passes its own runtime: its module path ends with it.
        let here = std::thread::current()
            .name()
            .unwrap_or_default()
            .to_string();
        assert!(here.ends_with(runtime.binary()), "{here} ran {runtime}");
    }

    crate::runtime_matrix!(sync: record);

    #[test]
    fn the_crun_wrapper_runs_the_installed_crun() {
        let real = Runtime::Crun
            .installed()
            .expect("crun is not installed: install Debian's crun");
        let dir = std::env::temp_dir().join(format!("crius-testkit-{}", std::process::id()));
        let wrapper = Runtime::Crun.executable_in(&dir).unwrap();
        let script = std::fs::read_to_string(&wrapper).unwrap();
        assert!(script.starts_with("#!/bin/sh\n"), "{script}");
        assert!(
            script.contains(&format!("exec {} \"$@\"", real.display())),
            "{script}"
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&wrapper).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o755);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
