//! Named failure points, for the test that walks every step of every mutating CRI
//! call, makes it fail or crash there, and checks that the node converges.
//!
//! Code marks a point with [`hit`]`("sandbox.run.pinned")`. Without the `enabled`
//! feature (every build but the `criusd-failpoints` test binary) that is an inline
//! `Ok(())`: nothing is compiled in. With it, the file named by the environment
//! variable [`ENV`] is read at each hit: lines `name=error` (the call fails there with
//! [`Injected`]), `name=abort` (the process aborts there, as a crash would), or
//! `name=off`; a missing file means every point is off. Each hit's name is appended to
//! `<file>.hits`, so a test can list the points a call passes, in order, before it
//! walks them.

/// The environment variable naming the failpoint file.
pub const ENV: &str = "CRIUS_FAILPOINTS";

/// The failure a point injects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failpoint {0} fired")]
pub struct Injected(pub &'static str);

/// Passes the point `name`: `Err` when it is set to `error`; never returns when it
/// is set to `abort`.
#[cfg(not(feature = "enabled"))]
#[inline(always)]
pub fn hit(_name: &'static str) -> Result<(), Injected> {
    Ok(())
}

/// Passes the point `name`: `Err` when it is set to `error`; never returns when it
/// is set to `abort`.
#[cfg(feature = "enabled")]
pub fn hit(name: &'static str) -> Result<(), Injected> {
    let Some(path) = std::env::var_os(ENV).map(std::path::PathBuf::from) else {
        return Ok(());
    };
    record(&path, name);
    match action(&std::fs::read_to_string(&path).unwrap_or_default(), name) {
        Action::Off => Ok(()),
        Action::Error => Err(Injected(name)),
        Action::Abort => std::process::abort(),
    }
}

#[cfg(feature = "enabled")]
fn record(path: &std::path::Path, name: &str) {
    use std::io::Write;
    let mut hits = path.as_os_str().to_owned();
    hits.push(".hits");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(hits)
    {
        let _ = writeln!(f, "{name}");
    }
}

/// What a point does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Off,
    Error,
    Abort,
}

/// The action the failpoint file `text` gives `name` (the last line naming it wins).
#[cfg_attr(not(feature = "enabled"), allow(dead_code))]
fn action(text: &str, name: &str) -> Action {
    text.lines()
        .rev()
        .filter_map(|l| l.trim().split_once('='))
        .filter(|(n, _)| n.trim() == name)
        .map(|(_, a)| match a.trim() {
            "error" => Action::Error,
            "abort" => Action::Abort,
            _ => Action::Off,
        })
        .next()
        .unwrap_or(Action::Off)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_sets_each_point() {
        let text = "a=error\nb = abort\n# c=error\nd=off\na=error\n";
        assert_eq!(action(text, "a"), Action::Error);
        assert_eq!(action(text, "b"), Action::Abort);
        assert_eq!(action(text, "c"), Action::Off);
        assert_eq!(action(text, "d"), Action::Off);
        assert_eq!(action(text, "e"), Action::Off);
        assert_eq!(
            action("x=error\nx=off\n", "x"),
            Action::Off,
            "the last line wins"
        );
    }

    #[cfg(not(feature = "enabled"))]
    #[test]
    fn without_the_feature_every_point_passes() {
        assert_eq!(hit("anything"), Ok(()));
    }
}
