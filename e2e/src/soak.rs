//! The soak driver shared by `benches/soak.rs` and `tests/soak.rs`: N pod + container
//! lifecycles against a running criusd, a few at a time, each with an ExecSync and a
//! read of the container's CRI log; the daemon's memory (`/proc/<pid>/status`) is
//! sampled every so many finished lifecycles, and what the daemon left behind is
//! checked afterwards (mounts, files, processes, veths, iptables chains, IP leases,
//! cgroups).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use crius_cri_api::v1 as cri;
use crius_cri_api::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

use crate::{ContainerBuilder, PodBuilder, TestNetwork, leaks};

type Rt = RuntimeServiceClient<Channel>;

/// What one soak run does.
#[derive(Debug, Clone)]
pub struct Soak {
    /// Lifecycles in all.
    pub lifecycles: usize,
    /// The number of the first (so a soak can go on where another stopped: pod names
    /// and sample marks count on from it).
    pub first: usize,
    /// Lifecycles in flight at once.
    pub parallel: usize,
    /// The daemon's memory is sampled every this many finished lifecycles.
    pub sample_every: usize,
    /// The image the containers run (pulled already).
    pub image: String,
    /// Where the pods' log directories go (one per lifecycle, removed after it).
    pub log_root: PathBuf,
    /// Makes the pod names unique to this run.
    pub tag: String,
    /// The daemon whose memory is sampled.
    pub daemon_pid: u32,
}

/// A daemon's memory and resources at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mem {
    /// Resident set, KiB.
    pub vm_rss_kib: u64,
    /// Resident anonymous memory (the heap, thread stacks), KiB.
    pub rss_anon_kib: u64,
    /// Threads.
    pub threads: u64,
    /// Open file descriptors.
    pub fds: u64,
}

/// The memory of process `pid`, from `/proc/<pid>/status` and `/proc/<pid>/fd`.
pub fn mem_of(pid: u32) -> Option<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(Mem {
        vm_rss_kib: field("VmRSS:")?,
        rss_anon_kib: field("RssAnon:")?,
        threads: field("Threads:")?,
        fds,
    })
}

/// One memory sample: after `done` finished lifecycles.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub done: usize,
    pub mem: Mem,
}

/// What a soak run saw.
#[derive(Debug, Default)]
pub struct Report {
    /// Memory samples, the first before any lifecycle.
    pub samples: Vec<Sample>,
    /// The latency of every successful lifecycle.
    pub latencies: Vec<Duration>,
    /// Every failed lifecycle: its number and what went wrong.
    pub failures: Vec<String>,
    /// The ids of every pod and container made (to look for their cgroups after).
    pub ids: Vec<String>,
    /// The whole run.
    pub elapsed: Duration,
}

impl Report {
    /// The `q` quantile (0..=1) of the lifecycle latencies, in milliseconds.
    pub fn latency_ms(&self, q: f64) -> f64 {
        let mut v = self.latencies.clone();
        if v.is_empty() {
            return f64::NAN;
        }
        v.sort();
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v[i.min(v.len() - 1)].as_secs_f64() * 1000.0
    }

    /// The sample taken after `done` lifecycles (or the first one after it).
    pub fn at(&self, done: usize) -> Option<Sample> {
        self.samples.iter().copied().find(|s| s.done >= done)
    }

    /// Adds the run `next` (which went on where this one stopped).
    pub fn extend(&mut self, next: Report) {
        self.samples.extend(next.samples);
        self.samples.sort_by_key(|s| s.done);
        self.samples.dedup_by_key(|s| s.done);
        self.latencies.extend(next.latencies);
        self.failures.extend(next.failures);
        self.ids.extend(next.ids);
        self.elapsed += next.elapsed;
    }

    /// The markdown table of the memory curve.
    pub fn curve(&self) -> String {
        let mib = |k: u64| k as f64 / 1024.0;
        let mut out = String::from(
            "| lifecycles | VmRSS (MiB) | RssAnon (MiB) | threads | fds |\n|---|---|---|---|---|\n",
        );
        for s in &self.samples {
            out.push_str(&format!(
                "| {} | {:.2} | {:.2} | {} | {} |\n",
                s.done,
                mib(s.mem.vm_rss_kib),
                mib(s.mem.rss_anon_kib),
                s.mem.threads,
                s.mem.fds
            ));
        }
        out
    }
}

/// `SOAK_LIFECYCLES` (or `default`), as the number of lifecycles to run.
pub fn lifecycles_from_env(default: usize) -> usize {
    std::env::var("SOAK_LIFECYCLES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Runs the soak: `soak.parallel` workers take lifecycle numbers until all are done.
pub async fn run(rt: Rt, soak: &Soak) -> Report {
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let report = Arc::new(Mutex::new(Report::default()));
    if let Some(mem) = mem_of(soak.daemon_pid) {
        lock(&report).samples.push(Sample {
            done: soak.first,
            mem,
        });
    }
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..soak.parallel.max(1) {
        let (rt, soak) = (rt.clone(), soak.clone());
        let (next, done, report) = (next.clone(), done.clone(), report.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= soak.lifecycles {
                    return;
                }
                let i = soak.first + i;
                let t = Instant::now();
                let mut ids = Vec::new();
                let outcome = lifecycle(&mut rt.clone(), &soak, i, &mut ids).await;
                let n = done.fetch_add(1, Ordering::SeqCst) + 1;
                let mem = (n % soak.sample_every.max(1) == 0 || n == soak.lifecycles)
                    .then(|| mem_of(soak.daemon_pid))
                    .flatten();
                let n = soak.first + n;
                let mut r = lock(&report);
                r.ids.extend(ids);
                match outcome {
                    Ok(()) => r.latencies.push(t.elapsed()),
                    Err(e) => r.failures.push(format!("lifecycle {i}: {e:#}")),
                }
                if let Some(mem) = mem {
                    r.samples.push(Sample { done: n, mem });
                }
            }
        }));
    }
    for w in workers {
        if let Err(e) = w.await {
            lock(&report)
                .failures
                .push(format!("a soak worker died: {e}"));
        }
    }
    let mut r = std::mem::take(&mut *lock(&report));
    r.elapsed = start.elapsed();
    r.samples.sort_by_key(|s| s.done);
    r
}

/// The memory of the idle daemon `pid` once its threads have settled: its blocking
/// threads leave after idling 10 s (tokio's keep-alive), their stacks and allocator
/// caches with them. Polls until the daemon runs no more threads than `threads` (its
/// count when it had done nothing yet), or for `within` at most, and returns the last
/// sample with whether the threads got there.
pub async fn settled_mem(pid: u32, threads: u64, within: Duration) -> Option<(Mem, bool)> {
    let deadline = Instant::now() + within;
    loop {
        let mem = mem_of(pid)?;
        if mem.threads <= threads {
            return Some((mem, true));
        }
        if Instant::now() > deadline {
            return Some((mem, false));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The line lifecycle `i`'s container writes to its log.
fn log_line(i: usize) -> String {
    format!("soak-line-{i}")
}

/// One lifecycle as the kubelet runs a Job's pod: RunPodSandbox, CreateContainer,
/// StartContainer, an ExecSync, the container's log line read from its CRI log,
/// StopContainer, RemoveContainer, StopPodSandbox, RemovePodSandbox. A failure
/// removes the pod (and so its container) before it is returned.
/// The ids of the pod and container made go to `ids`.
async fn lifecycle(rt: &mut Rt, soak: &Soak, i: usize, ids: &mut Vec<String>) -> Result<()> {
    let logs = soak.log_root.join(format!("p{i}"));
    let pc = PodBuilder::new(&format!("soak-{}-{i}", soak.tag))
        .log_directory(&logs)
        .build();
    let pod = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pc.clone()),
            runtime_handler: String::new(),
        })
        .await
        .map_err(|s| anyhow!("RunPodSandbox: {s}"))?
        .into_inner()
        .pod_sandbox_id;
    ids.push(pod.clone());
    let result = in_pod(rt, soak, i, &pod, pc, &logs, ids).await;
    let removed = crate::remove_pod(rt, &pod).await;
    let _ = std::fs::remove_dir_all(&logs);
    result.and(removed)
}

/// The container part of [`lifecycle`], inside pod `pod`.
async fn in_pod(
    rt: &mut Rt,
    soak: &Soak,
    i: usize,
    pod: &str,
    pc: cri::PodSandboxConfig,
    logs: &Path,
    ids: &mut Vec<String>,
) -> Result<()> {
    // The shell logs a line, then waits on a child it kills on the stop signal, so a
    // stop ends it at once (a shell waiting in `wait` runs its trap without delay).
    // The test image's stop signal is SIGUSR1; TERM is trapped as well. A shell as
    // PID 1 drops any signal it has no trap for, and the stop would then wait out its
    // whole timeout and SIGKILL: the exit code below tells the two apart.
    let script = format!(
        "trap 'kill $! 2>/dev/null; exit 0' USR1 TERM; echo {}; sleep 100000 & wait",
        log_line(i)
    );
    let ctr = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.to_string(),
            config: Some(
                ContainerBuilder::new("app", &soak.image)
                    .command(["/bin/sh", "-c", &script])
                    .log_path("app/0.log")
                    .build(),
            ),
            sandbox_config: Some(pc),
        })
        .await
        .map_err(|s| anyhow!("CreateContainer: {s}"))?
        .into_inner()
        .container_id;
    ids.push(ctr.clone());
    rt.start_container(cri::StartContainerRequest {
        container_id: ctr.clone(),
    })
    .await
    .map_err(|s| anyhow!("StartContainer: {s}"))?;
    let word = format!("exec-{i}");
    let out = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: ctr.clone(),
            cmd: vec!["/bin/echo".into(), word.clone()],
            timeout: 30,
        })
        .await
        .map_err(|s| anyhow!("ExecSync: {s}"))?
        .into_inner();
    if out.exit_code != 0 || out.stdout != format!("{word}\n").as_bytes() {
        bail!(
            "ExecSync answered exit {} stdout {:?} stderr {:?}",
            out.exit_code,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    wait_for_log_line(&logs.join("app/0.log"), &log_line(i)).await?;
    rt.stop_container(cri::StopContainerRequest {
        container_id: ctr.clone(),
        timeout: 10,
    })
    .await
    .map_err(|s| anyhow!("StopContainer: {s}"))?;
    let status = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: ctr.clone(),
            verbose: false,
        })
        .await
        .map_err(|s| anyhow!("ContainerStatus: {s}"))?
        .into_inner()
        .status
        .ok_or_else(|| anyhow!("ContainerStatus: no status"))?;
    if status.exit_code != 0 {
        bail!(
            "the stopped container exited {} ({}): its trap did not run, so the stop \
             signal was not heard",
            status.exit_code,
            status.reason
        );
    }
    rt.remove_container(cri::RemoveContainerRequest { container_id: ctr })
        .await
        .map_err(|s| anyhow!("RemoveContainer: {s}"))?;
    Ok(())
}

/// Polls the CRI log at `path` until a full stdout line says `want`.
async fn wait_for_log_line(path: &Path, want: &str) -> Result<()> {
    let deadline = Instant::now() + crate::DEADLINE;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for line in text.lines() {
            // `<RFC 3339 time> <stream> <P|F> <message>`
            let mut parts = line.splitn(4, ' ');
            let (ts, stream, tag, msg) = (parts.next(), parts.next(), parts.next(), parts.next());
            if ts.is_some_and(|t| t.ends_with('Z'))
                && stream == Some("stdout")
                && tag == Some("F")
                && msg == Some(want)
            {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!(
                "{want:?} did not appear in {} within {:?}; it holds {text:?}",
                path.display(),
                crate::DEADLINE
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The IP leases of `network` left in a stopped daemon's store at `store`.
pub fn leases_left(store: &Path, network: &str) -> Result<Vec<String>> {
    use crius_cni::LeaseStore;
    let db =
        crius_store::Store::open(store).with_context(|| format!("opening {}", store.display()))?;
    Ok(db
        .blocking()
        .list(network)
        .map_err(|e| anyhow!("listing the leases of {network}: {e}"))?
        .into_iter()
        .map(|l| format!("IP lease: {} of pod {}", l.address, l.pod_id))
        .collect())
}

/// The cgroups (cgroupfs driver, default parent `/crius`) of any of `ids` that are
/// still there, in any controller's hierarchy.
pub fn cgroups_left(ids: &[String]) -> Vec<String> {
    let ctrls: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    for id in ids {
        for ctrl in &ctrls {
            let dir = ctrl.join("crius").join(format!("crius-{id}"));
            if dir.exists() {
                out.push(format!("cgroup: {}", dir.display()));
            }
        }
    }
    out
}

/// Everything a stopped daemon on `root` (the test layout: `state/`, `run/`) with
/// network `net` left behind: mounts (the pods' pinned namespaces among them),
/// files, processes (shims, containers), veths and pod chains, IP leases, and the
/// cgroups of the pods and containers `ids`. Removes the network's bridge and base
/// chains afterwards, and says if that failed.
pub fn leftovers(root: &Path, net: &TestNetwork, ids: &[String]) -> Vec<String> {
    let mut out = leaks(root);
    out.extend(cgroups_left(ids));
    out.extend(net.pod_leftovers());
    match leases_left(&root.join("state/store.redb"), &net.bridge) {
        Ok(l) => out.extend(l),
        Err(e) => out.push(format!("{e:#}")),
    }
    out.extend(net.remove());
    out
}
