//! Every fuzz target for a fixed number of iterations (a few hundred to a few
//! thousand, sized so that all of them take well under a minute in a debug build),
//! deterministically seeded: the seed is printed with any failure, and
//! `FUZZ_SEED=<seed> cargo test -p crius-fuzz --test fuzz -- --exact <target>`
//! repeats the run. `FUZZ_ITERATIONS` overrides the count; `FUZZ_CORPUS=<dir>` replays
//! another directory instead of the target's corpus (with `FUZZ_ITERATIONS=0`: just
//! the saved failing inputs in `target/fuzz-artifacts/<target>/`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../targets/mod.rs"]
mod targets;

use std::path::PathBuf;

use crius_fuzz::{Options, rng};
use targets::{artifacts_dir, corpus_root, env_u64};

fn check(name: &str) {
    let target = targets::by_name(name).unwrap_or_else(|| panic!("no target {name}"));
    let opts = Options {
        iterations: env_u64("FUZZ_ITERATIONS").unwrap_or(target.ci_iterations),
        seed: env_u64("FUZZ_SEED").unwrap_or(0x5eed_c0de ^ rng::hash(name.as_bytes())),
        stop_on_failure: true,
        corpus_dir: std::env::var_os("FUZZ_CORPUS")
            .map(PathBuf::from)
            .unwrap_or_else(|| corpus_root().join(name)),
        artifacts_dir: artifacts_dir(),
        time_bound: None,
        budget: None,
    };
    let report = crius_fuzz::run(target, opts);
    println!("{}\n{}", crius_fuzz::Report::header(), report.row());
    report.assert_clean();
    assert!(report.corpus > 0, "{name} has no corpus");
    assert_eq!(
        report.executed,
        report.corpus as u64 + env_u64("FUZZ_ITERATIONS").unwrap_or(target.ci_iterations),
        "{name} did not run every input"
    );
}

macro_rules! targets {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check(stringify!($name));
            }
        )*

        #[test]
        fn every_target_has_a_test_and_a_corpus() {
            let tested = [$(stringify!($name)),*];
            for t in targets::TARGETS {
                assert!(tested.contains(&t.name), "{} has no test", t.name);
                let files = crius_fuzz::load_corpus(&corpus_root().join(t.name));
                assert!(!files.is_empty(), "{} has no corpus", t.name);
            }
            assert_eq!(tested.len(), targets::TARGETS.len());
        }
    };
}

targets!(
    layer,
    reference,
    manifest,
    challenge,
    pod_sandbox,
    create_container,
    cri_calls,
    spdy_frames,
    spdy_session,
    websocket,
    cni_result,
    config,
);

/// Rewrites the seed files of every corpus from the generators.
#[test]
#[ignore = "writes fuzz/corpus; run by hand when a seed generator changes"]
fn write_seed_corpus() {
    targets::seeds::write(&corpus_root()).unwrap();
}
