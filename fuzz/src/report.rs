//! What a run found, and the benchmark's table.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// What went wrong with an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The target panicked (an assertion of an invariant, or a bug).
    Crash,
    /// The input ran longer than the target's time bound.
    Hang,
}

impl FailureKind {
    /// `crash` or `hang`, as artifact file names start.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Crash => "crash",
            FailureKind::Hang => "hang",
        }
    }
}

/// One failing input.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Crash or hang.
    pub kind: FailureKind,
    /// Which input: a corpus file or the iteration number.
    pub input: String,
    /// The panic message and location, or how long it ran.
    pub message: String,
    /// Where the input was saved.
    pub artifact: Option<PathBuf>,
    /// Its length.
    pub input_len: usize,
}

/// The outcome of running one target.
#[derive(Debug, Clone)]
pub struct Report {
    /// The target's name.
    pub target: &'static str,
    /// The seed the run used.
    pub seed: u64,
    /// Corpus files replayed before mutating.
    pub corpus: usize,
    /// Inputs run (corpus and mutated).
    pub executed: u64,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// Inputs that panicked.
    pub crashes: u64,
    /// Inputs over the time bound.
    pub hangs: u64,
    /// Distinct outcome signatures the target returned.
    pub outcomes: usize,
    /// Coverage counters hit, when the build is instrumented.
    pub edges: Option<usize>,
    /// Inputs kept for mutation at the end (corpus included).
    pub pool: usize,
    /// The failing inputs.
    pub failures: Vec<Failure>,
}

impl Report {
    /// Executions per second.
    pub fn rate(&self) -> f64 {
        self.executed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Panics with every failure, the seed and how to reproduce, unless there is none.
    pub fn assert_clean(&self) {
        if self.failures.is_empty() {
            return;
        }
        panic!("{self}");
    }

    /// The column headers of [`Report::row`].
    pub fn header() -> String {
        format!(
            "{:<16} {:>11} {:>9} {:>8} {:>6} {:>9} {:>8} {:>7}",
            "target", "iterations", "exec/s", "crashes", "hangs", "outcomes", "edges", "corpus"
        )
    }

    /// One line of the benchmark's table.
    pub fn row(&self) -> String {
        format!(
            "{:<16} {:>11} {:>9.0} {:>8} {:>6} {:>9} {:>8} {:>7}",
            self.target,
            self.executed,
            self.rate(),
            self.crashes,
            self.hangs,
            self.outcomes,
            self.edges
                .map_or_else(|| "-".to_string(), |e| e.to_string()),
            format!("{}+{}", self.corpus, self.pool.saturating_sub(self.corpus)),
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "fuzz target {}: {} inputs in {:.1?}, {} crashes, {} hangs (seed {:#018x})",
            self.target, self.executed, self.elapsed, self.crashes, self.hangs, self.seed
        )?;
        for x in &self.failures {
            writeln!(
                f,
                "  {} on {} ({} bytes): {}",
                x.kind.as_str(),
                x.input,
                x.input_len,
                x.message
            )?;
            if let Some(p) = &x.artifact {
                writeln!(
                    f,
                    "    input saved as {}; copy it into fuzz/corpus/{}/ as a regression input",
                    p.display(),
                    self.target
                )?;
            }
        }
        if !self.failures.is_empty() {
            writeln!(
                f,
                "  reproduce: FUZZ_SEED={:#x} cargo test -p crius-fuzz --test fuzz -- --exact {}",
                self.seed, self.target
            )?;
        }
        Ok(())
    }
}
