//! Every fuzz target for many iterations (`FUZZ_ITERATIONS`, default 1,000,000 per
//! target, or as many as `FUZZ_SECONDS` allow, default 600 — the call-sequence
//! target runs tens of inputs a second; `FUZZ_TARGETS=a,b` picks targets;
//! `FUZZ_SEED` the seed), then a table:
//! iterations, executions per second, crashes, hangs, distinct outcomes, edges
//! covered (in a build instrumented by `fuzz/sancov-rustc`) and the corpus (seeds
//! plus inputs kept). Crashing and hanging inputs are saved under
//! `target/fuzz-artifacts/<target>/`. Exits non-zero when anything was found.

#[path = "../targets/mod.rs"]
mod targets;

use crius_fuzz::{Options, Report, rng};
use std::io::Write;
use targets::{artifacts_dir, corpus_root, env_u64};

fn main() {
    let iterations = env_u64("FUZZ_ITERATIONS").unwrap_or(1_000_000);
    let only = std::env::var("FUZZ_TARGETS").unwrap_or_default();
    let budget = std::time::Duration::from_secs(env_u64("FUZZ_SECONDS").unwrap_or(600));
    let artifacts = artifacts_dir();
    println!(
        "fuzzing {iterations} iterations per target, at most {}s each",
        budget.as_secs()
    );
    println!("{}", Report::header());
    let mut reports = Vec::new();
    for t in targets::TARGETS {
        if !only.is_empty() && !only.split(',').any(|n| n.trim() == t.name) {
            continue;
        }
        let opts = Options {
            iterations,
            seed: env_u64("FUZZ_SEED").unwrap_or(0xbe7c_4000 ^ rng::hash(t.name.as_bytes())),
            stop_on_failure: false,
            corpus_dir: corpus_root().join(t.name),
            artifacts_dir: artifacts.clone(),
            time_bound: None,
            budget: Some(budget),
        };
        let r = crius_fuzz::run(t, opts);
        println!("{}", r.row());
        let _ = std::io::stdout().flush();
        reports.push(r);
    }
    println!();
    println!("{}", Report::header());
    for r in &reports {
        println!("{}", r.row());
    }
    let failed: Vec<&Report> = reports.iter().filter(|r| !r.failures.is_empty()).collect();
    for r in &failed {
        println!();
        print!("{r}");
    }
    if !failed.is_empty() {
        std::process::exit(1);
    }
}
