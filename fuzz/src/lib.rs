//! crius's fuzzing engine: a deterministic, stable-Rust mutation fuzzer for the
//! parsers that read untrusted input (layer tars, image references, manifests,
//! registry challenges, CRI requests, SPDY and WebSocket frames, CNI results, the
//! config file) and for random call sequences against the CRI managers.
//!
//! cargo-fuzz needs nightly; this needs nothing. A [`Target`] is a name, a
//! [`Harness`] constructor, a dictionary and limits; the harnesses are in
//! `fuzz/targets/`, one file per target, and their committed seed corpora in
//! `fuzz/corpus/<target>/` (one directory for all targets: every input format is
//! next to the engine that replays it, the tests and the benchmark read one tree,
//! and a regression input is added in one place whichever crate it concerns).
//!
//! A run ([`run`]) replays every corpus file, then runs `iterations` mutated inputs:
//! each picks a parent from the pool (the corpus plus every input that produced
//! something new), applies the harness's structure-aware mutation or stacked byte
//! mutations ([`mutate`]), and runs it under the target's time bound with panics
//! caught ([`panics`]). "Something new" is a new outcome signature (what the
//! harness returns: which refusal, which shape of success) or, in a build
//! instrumented with SanitizerCoverage counters, a new edge ([`coverage`]).
//! Everything follows from the seed, so a failure reproduces from the seed the
//! report prints; the failing input itself is written to
//! `target/fuzz-artifacts/<target>/`.
//!
//! - `cargo test -p crius-fuzz` runs every target for a few hundred iterations
//!   (`FUZZ_ITERATIONS`, `FUZZ_SEED` override), failing on the first crash or hang.
//! - `cargo bench -p crius-fuzz` runs every target for `FUZZ_ITERATIONS` (default
//!   1,000,000) or `FUZZ_SECONDS` (default 600), whichever ends first
//!   (`FUZZ_TARGETS=a,b` picks targets), and prints a table.
//! - `RUSTC_WORKSPACE_WRAPPER=$PWD/fuzz/sancov-rustc cargo bench -p crius-fuzz`
//!   does the same coverage-guided (workspace crates instrumented, dependencies not).

pub mod coverage;
pub mod mutate;
pub mod panics;
mod report;
pub mod rng;
mod runner;

use std::time::Duration;

pub use report::{Failure, FailureKind, Report};
pub use rng::Rng;
pub use runner::{MAX_HANGS, Options, load_corpus, run};

/// One fuzz target's code under test, with whatever state it keeps between inputs
/// (a temporary directory, a runtime, a store).
pub trait Harness {
    /// Runs one input. Panics (an `assert!`) when an invariant does not hold; returns
    /// a signature of the outcome (which error, which kind of success), so the engine
    /// keeps inputs that reach new outcomes.
    fn run(&mut self, input: &[u8]) -> u64;

    /// A structure-aware mutation of `input` (for example: decode, change a field,
    /// re-encode). Returns false when it has none for this input; the engine then
    /// mutates bytes.
    fn mutate(&mut self, input: &mut Vec<u8>, rng: &mut Rng) -> bool {
        let _ = (input, rng);
        false
    }
}

/// A fuzz target.
#[derive(Debug)]
pub struct Target {
    /// Its name: the corpus directory and the test's name.
    pub name: &'static str,
    /// Builds the harness (once per run, and again after a crash).
    pub make: fn() -> Box<dyn Harness>,
    /// Tokens of the input format, spliced in by the byte mutator.
    pub dictionary: &'static [&'static [u8]],
    /// Longest input generated.
    pub max_len: usize,
    /// An input running longer is a hang.
    pub time_bound: Duration,
    /// Mutated inputs per `cargo test` run.
    pub ci_iterations: u64,
}
