//! The loop that runs one target: its corpus first, then mutated inputs, each under
//! a time bound, with panics caught and the failing input saved.
//!
//! Threads: a worker runs the inputs; the calling thread watches it. An input still
//! running after the target's time bound is a hang: the watcher saves it and, unless
//! told to stop at the first failure, abandons the stuck worker and starts a fresh
//! one (fresh harness, same corpus and pool) on the next input. A run gives up after
//! [`MAX_HANGS`] hangs. An input that finishes but took longer than the bound is a
//! hang too.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::coverage::Coverage;
use crate::mutate::{self, Sources};
use crate::panics::PanicSlot;
use crate::report::{Failure, FailureKind, Report};
use crate::rng::{Rng, hash, mix};
use crate::{Harness, Target};

/// Hangs after which a run stops: each leaves a stuck thread behind.
pub const MAX_HANGS: u64 = 3;
/// Inputs kept for mutation beyond the corpus.
const POOL_CAP: usize = 4096;

/// How to run a target.
#[derive(Debug, Clone)]
pub struct Options {
    /// Mutated inputs to run after the corpus.
    pub iterations: u64,
    /// The run's seed: the same seed, corpus and code give the same inputs.
    pub seed: u64,
    /// Stop at the first crash or hang (the tests) or go on counting (the benchmark).
    pub stop_on_failure: bool,
    /// The committed corpus of the target (every file is one input).
    pub corpus_dir: PathBuf,
    /// Where failing inputs are written.
    pub artifacts_dir: PathBuf,
    /// Overrides the target's own time bound.
    pub time_bound: Option<Duration>,
    /// Stops taking mutated inputs once the run has taken this long (the report
    /// counts the inputs actually run); the corpus is always replayed whole.
    pub budget: Option<Duration>,
}

/// Every file of a corpus directory, by name.
pub fn load_corpus(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(String, Vec<u8>)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            std::fs::read(e.path()).ok().map(|d| (name, d))
        })
        .collect();
    files.sort();
    files
}

struct State {
    /// Next job: `0..seeds` replays the corpus, then mutated iterations.
    next: u64,
    pool: Vec<Vec<u8>>,
    outcomes: HashSet<u64>,
    coverage: Coverage,
    executed: u64,
    crashes: u64,
    hangs: u64,
    failures: Vec<Failure>,
    /// Bumped when a worker is abandoned; a worker whose generation is stale exits.
    generation: u64,
    stop: bool,
}

struct Shared {
    target: &'static Target,
    opts: Options,
    seeds: Vec<(String, Vec<u8>)>,
    epoch: Instant,
    /// When the running input started (nanoseconds after `epoch`, plus one); 0 idle.
    started: AtomicU64,
    /// The running input and its job number.
    current: Mutex<(u64, Vec<u8>)>,
    state: Mutex<State>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn jobs(&self) -> u64 {
        self.seeds.len() as u64 + self.opts.iterations
    }

    fn bound(&self) -> Duration {
        self.opts.time_bound.unwrap_or(self.target.time_bound)
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64 + 1
    }

    /// The input of job `job`: a corpus file, or a mutation of a pool entry.
    fn input(&self, job: u64, harness: &mut dyn Harness) -> Vec<u8> {
        if let Some((_, seed)) = self.seeds.get(job as usize) {
            return seed.clone();
        }
        let mut rng = Rng::new(self.opts.seed ^ mix(job));
        let (mut data, other) = {
            let st = lock(&self.state);
            let parent = rng.pick(&st.pool).cloned().unwrap_or_default();
            let other = rng.pick(&st.pool).cloned();
            (parent, other)
        };
        let t = self.target;
        let custom = rng.one_in(2) && harness.mutate(&mut data, &mut rng);
        if !custom || rng.one_in(4) {
            let src = Sources {
                dictionary: t.dictionary,
                other: other.as_deref(),
                max_len: t.max_len,
            };
            mutate::mutate(&mut data, &mut rng, src);
        }
        data.truncate(t.max_len);
        data
    }

    fn save(&self, kind: &str, data: &[u8]) -> Option<PathBuf> {
        let dir = self.opts.artifacts_dir.join(self.target.name);
        std::fs::create_dir_all(&dir).ok()?;
        let path = dir.join(format!("{kind}-{:016x}", hash(data)));
        std::fs::write(&path, data).ok()?;
        Some(path)
    }

    fn fail(&self, st: &mut State, kind: FailureKind, job: u64, data: &[u8], message: String) {
        let artifact = self.save(kind.as_str(), data);
        let n = self.seeds.len() as u64;
        st.failures.push(Failure {
            kind,
            input: if job < n {
                format!("corpus file {}", self.seeds[job as usize].0)
            } else {
                format!("iteration {}", job - n)
            },
            message,
            artifact,
            input_len: data.len(),
        });
        if self.opts.stop_on_failure {
            st.stop = true;
        }
    }
}

/// A harness, built inside `catch_unwind` so a panicking constructor is a crash
/// of the target rather than of the run.
fn build(target: &Target) -> Result<Box<dyn Harness>, String> {
    std::panic::catch_unwind(target.make).map_err(|_| {
        PanicSlot::current()
            .and_then(|s| s.take())
            .unwrap_or_else(|| "the harness constructor panicked".into())
    })
}

fn worker(shared: Arc<Shared>, generation: u64) {
    let slot = PanicSlot::new();
    slot.enter();
    let mut harness = match build(shared.target) {
        Ok(h) => h,
        Err(m) => {
            let mut st = lock(&shared.state);
            st.crashes += 1;
            shared.fail(&mut st, FailureKind::Crash, 0, &[], m);
            st.stop = true;
            return;
        }
    };
    loop {
        let job = {
            let mut st = lock(&shared.state);
            if st.stop || st.generation != generation || st.next >= shared.jobs() {
                return;
            }
            let spent = shared
                .opts
                .budget
                .is_some_and(|b| shared.epoch.elapsed() >= b);
            if spent && st.next >= shared.seeds.len() as u64 {
                return;
            }
            st.next += 1;
            st.next - 1
        };
        let data = shared.input(job, &mut *harness);
        *lock(&shared.current) = (job, data.clone());
        lock(&shared.state).coverage.reset();
        let start = Instant::now();
        shared.started.store(shared.now(), Ordering::SeqCst);
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| harness.run(&data)));
        shared.started.store(0, Ordering::SeqCst);
        let took = start.elapsed();
        let panicked = slot.take().or_else(|| {
            result
                .is_err()
                .then(|| "a panic without a message".to_string())
        });
        let mut st = lock(&shared.state);
        if st.generation != generation {
            // Abandoned as hung while this input ran; the new worker owns the run.
            return;
        }
        st.executed += 1;
        if let Some(message) = panicked {
            st.crashes += 1;
            shared.fail(&mut st, FailureKind::Crash, job, &data, message);
            drop(st);
            // The harness may be half-way through something: start over.
            let old = std::mem::replace(&mut harness, Box::new(Nothing));
            let _ = std::panic::catch_unwind(AssertUnwindSafe(move || drop(old)));
            let _ = slot.take();
            match build(shared.target) {
                Ok(h) => harness = h,
                Err(_) => return,
            }
            continue;
        }
        if took > shared.bound() {
            st.hangs += 1;
            let m = format!("took {took:?}, over the time bound of {:?}", shared.bound());
            shared.fail(&mut st, FailureKind::Hang, job, &data, m);
            continue;
        }
        let Ok(signature) = result else { continue };
        let new_outcome = st.outcomes.insert(signature);
        let new_edges = st.coverage.collect();
        if (new_outcome || new_edges) && job >= shared.seeds.len() as u64 {
            if st.pool.len() < POOL_CAP {
                st.pool.push(data);
            } else {
                let n = shared.seeds.len().max(1);
                let i = n + (mix(job) as usize) % (POOL_CAP - n);
                st.pool[i] = data;
            }
        }
    }
}

/// A stand-in while a crashed harness is rebuilt.
struct Nothing;

impl Harness for Nothing {
    fn run(&mut self, _: &[u8]) -> u64 {
        0
    }
}

/// Runs `target` as `opts` says and reports what happened.
pub fn run(target: &'static Target, opts: Options) -> Report {
    let seeds = load_corpus(&opts.corpus_dir);
    let mut pool: Vec<Vec<u8>> = seeds.iter().map(|s| s.1.clone()).collect();
    if pool.is_empty() {
        pool.push(Vec::new());
    }
    let shared = Arc::new(Shared {
        target,
        seeds,
        epoch: Instant::now(),
        started: AtomicU64::new(0),
        current: Mutex::new((0, Vec::new())),
        state: Mutex::new(State {
            next: 0,
            pool,
            outcomes: HashSet::new(),
            coverage: Coverage::new(),
            executed: 0,
            crashes: 0,
            hangs: 0,
            failures: Vec::new(),
            generation: 0,
            stop: false,
        }),
        opts,
    });
    let start = Instant::now();
    let mut generation = 0;
    let mut handle = spawn(&shared, generation);
    let tick = (shared.bound() / 4).clamp(Duration::from_millis(1), Duration::from_millis(50));
    loop {
        std::thread::sleep(tick);
        if handle.as_ref().is_none_or(|h| h.is_finished()) {
            break;
        }
        let started = shared.started.load(Ordering::SeqCst);
        let running = Duration::from_nanos(shared.now().saturating_sub(started));
        if started == 0 || running <= shared.bound() {
            continue;
        }
        let (job, data) = lock(&shared.current).clone();
        let mut st = lock(&shared.state);
        if shared.started.load(Ordering::SeqCst) != started {
            continue; // It finished after all.
        }
        st.hangs += 1;
        st.executed += 1;
        let m = format!(
            "still running after {running:?} (time bound {:?}); abandoned",
            shared.bound()
        );
        shared.fail(&mut st, FailureKind::Hang, job, &data, m);
        generation += 1;
        st.generation = generation;
        if st.stop || st.hangs >= MAX_HANGS {
            st.stop = true;
            handle = None;
            break;
        }
        drop(st);
        shared.started.store(0, Ordering::SeqCst);
        handle = spawn(&shared, generation);
    }
    if let Some(h) = handle {
        let _ = h.join();
    }
    let st = lock(&shared.state);
    Report {
        target: target.name,
        seed: shared.opts.seed,
        corpus: shared.seeds.len(),
        executed: st.executed,
        elapsed: start.elapsed(),
        crashes: st.crashes,
        hangs: st.hangs,
        outcomes: st.outcomes.len(),
        edges: st.coverage.available().then(|| st.coverage.edges()),
        pool: st.pool.len(),
        failures: st.failures.clone(),
    }
}

fn spawn(shared: &Arc<Shared>, generation: u64) -> Option<std::thread::JoinHandle<()>> {
    let s = shared.clone();
    std::thread::Builder::new()
        .name(format!("fuzz-{}", shared.target.name))
        // Debug builds of deep parsers (serde, toml) want more than the default stack.
        .stack_size(64 << 20)
        .spawn(move || worker(s, generation))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FailureKind;

    /// Panics on inputs that start with "BUG", hangs on "HANG", sorts the rest by
    /// their first byte.
    struct Toy;

    impl Harness for Toy {
        fn run(&mut self, input: &[u8]) -> u64 {
            assert!(!input.starts_with(b"BUG"), "found the bug");
            if input.starts_with(b"HANG") {
                loop {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            u64::from(input.first().copied().unwrap_or(0) / 64)
        }
    }

    static TOY: Target = Target {
        name: "toy",
        make: || Box::new(Toy),
        dictionary: &[b"BUG", b"HA"],
        max_len: 16,
        time_bound: Duration::from_millis(200),
        ci_iterations: 0,
    };

    fn opts(dir: &Path, seed: u64, stop: bool, iterations: u64) -> Options {
        Options {
            iterations,
            seed,
            stop_on_failure: stop,
            corpus_dir: dir.join("corpus"),
            artifacts_dir: dir.join("artifacts"),
            time_bound: None,
            budget: None,
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("crius-fuzz-engine-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("corpus")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(d.join("corpus/a"), b"ok input").unwrap_or_else(|e| panic!("{e}"));
        d
    }

    #[test]
    fn mutation_finds_a_crash_and_saves_the_input() {
        let d = scratch("crash");
        let r = run(&TOY, opts(&d, 1, true, 200_000));
        let crash = r.failures.iter().find(|f| f.kind == FailureKind::Crash);
        let Some(crash) = crash else {
            panic!("no crash found: {r}");
        };
        assert!(crash.message.contains("found the bug"), "{}", crash.message);
        let saved = crash.artifact.as_ref().map(std::fs::read);
        assert!(matches!(saved, Some(Ok(s)) if s.starts_with(b"BUG")));
        assert!(r.to_string().contains(&format!("FUZZ_SEED={:#x}", r.seed)));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_hang_is_reported_and_the_run_goes_on() {
        let d = scratch("hang");
        std::fs::write(d.join("corpus/b"), b"HANG").unwrap_or_else(|e| panic!("{e}"));
        let r = run(&TOY, opts(&d, 2, false, 50));
        assert!(r.hangs >= 1, "{r}");
        assert!(
            r.failures
                .iter()
                .any(|f| f.kind == FailureKind::Hang && f.input.contains("corpus file b"))
        );
        assert!(r.executed > 2, "the run stopped at the hang: {r}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_same_seed_makes_the_same_run() {
        let d = scratch("same");
        let a = run(&TOY, opts(&d, 3, false, 2000));
        let b = run(&TOY, opts(&d, 3, false, 2000));
        assert_eq!(
            (a.crashes, a.outcomes, a.pool),
            (b.crashes, b.outcomes, b.pool)
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
