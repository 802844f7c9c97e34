//! Random CRI call sequences against the managers (crates/cri-server, over the
//! recording fake host and a store on tmpfs): run/stop/remove pod and
//! create/start/stop/remove container with ids picked from what exists (whole, as
//! prefixes, or made up) and names from a small pool so they collide, interleaved
//! with injected host failures, dying shims, exit-watcher rounds, daemon restarts
//! and pairs of calls made concurrently.
//!
//! Invariants (checked in `crius_cri_server::fuzzing::CallRig`): nothing panics;
//! without injected failures a call fails only with a refusal the kubelet can
//! provoke; between calls every container's pod exists unless the container has
//! exited, every created or running container has its shim, and the host holds
//! nothing no record accounts for; after removing everything (and a restart), no
//! record, directory, mount, layer, shim, pinned namespace or network is left.
//!
//! Input: a list of calls, three bytes each (see [`decode`]).

use std::collections::BTreeSet;

use crius_cri_server::fuzzing::{CallRig, CriResult, PodSpec};
use crius_fuzz::{Harness, Target};

use super::{IO_BOUND, Reader, Writer, runtime, tag, temp_root};

pub const TARGET: Target = Target {
    name: "cri_calls",
    make: || Box::new(Calls::new()),
    dictionary: &[],
    max_len: 96,
    time_bound: IO_BOUND,
    ci_iterations: 150,
};

const NAMES: &[&str] = &["web", "db", "web", "a", "sidecar-with-a-long-name"];
const MAX_CALLS: usize = 24;

/// Which existing object a call is about.
#[derive(Debug, Clone, Copy)]
pub enum Pick {
    /// The n-th pod (by id order).
    Pod(u8),
    /// The n-th container.
    Container(u8),
    /// The first characters of the n-th pod or container id.
    Prefix(u8, u8),
    /// An id nothing has.
    Unknown,
}

/// One call.
#[derive(Debug, Clone, Copy)]
pub enum Call {
    RunPod {
        name: u8,
        attempt: u8,
        shared_pid: bool,
        host_network: bool,
    },
    StopPod(Pick),
    RemovePod(Pick),
    CreateContainer {
        pod: Pick,
        name: u8,
        attempt: u8,
        privileged: bool,
    },
    Start(Pick),
    Stop(Pick, u8),
    Remove(Pick),
    List,
    FailHost(u8),
    FailUndo(u8),
    ClearFailures,
    KillShim(Pick, bool),
    PollExits,
    Restart,
}

/// A call, or two made at once.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    One(Call),
    Both(Call, Call),
}

fn pick(code: u8, arg: u8) -> Pick {
    match code % 8 {
        0..=2 => Pick::Pod(arg),
        3..=5 => Pick::Container(arg),
        6 => Pick::Prefix(arg, code / 8),
        _ => Pick::Unknown,
    }
}

fn call(op: u8, r: &mut Reader<'_>) -> Call {
    let (a, b) = (r.u8(), r.u8());
    match op % 16 {
        0 | 1 => Call::RunPod {
            name: a,
            attempt: b % 3,
            shared_pid: b & 8 != 0,
            host_network: b & 16 != 0,
        },
        2 => Call::StopPod(pick(a, b)),
        3 => Call::RemovePod(pick(a, b)),
        4 | 5 => Call::CreateContainer {
            pod: pick(a % 3, b),
            name: b,
            attempt: a / 16 % 3,
            privileged: a & 64 != 0 && b & 64 != 0,
        },
        6 => Call::Start(pick(a, b)),
        7 => Call::Stop(pick(a, b), b / 64),
        8 => Call::Remove(pick(a, b)),
        9 => Call::List,
        10 => Call::FailHost(a % 6),
        11 => Call::FailUndo(a),
        12 => Call::ClearFailures,
        13 => Call::KillShim(pick(3, a), b & 1 == 1),
        14 => Call::PollExits,
        _ => Call::Restart,
    }
}

/// Decodes calls, three bytes each (operation, two arguments); an operation byte
/// with the top bit set makes the call and the next one concurrent.
pub fn decode(input: &[u8]) -> Vec<Step> {
    let mut r = Reader::new(input);
    let mut steps = Vec::new();
    while !r.is_empty() && steps.len() < MAX_CALLS {
        let op = r.u8();
        let c = call(op, &mut r);
        steps.push(if op & 0x80 != 0 && !r.is_empty() {
            let next = r.u8();
            Step::Both(c, call(next, &mut r))
        } else {
            Step::One(c)
        });
    }
    steps
}

struct Calls {
    rt: tokio::runtime::Runtime,
    _root: tempfile::TempDir,
    rig: CallRig,
    /// `FUZZ_TRACE` set: print each call and its outcome (to read a failing input).
    trace: bool,
}

impl Calls {
    fn new() -> Calls {
        let root = temp_root("crius-fuzz-calls-");
        let rt = runtime();
        let rig = match rt.block_on(CallRig::new(root.path())) {
            Ok(r) => r,
            Err(e) => panic!("setting up the call rig: {e}"),
        };
        Calls {
            rt,
            _root: root,
            rig,
            trace: std::env::var_os("FUZZ_TRACE").is_some(),
        }
    }
}

async fn resolve(rig: &CallRig, p: Pick) -> String {
    let (pods, containers) = rig.ids().await;
    let nth = |v: &[String], n: u8| {
        if v.is_empty() {
            "0000".to_string()
        } else {
            v[usize::from(n) % v.len()].clone()
        }
    };
    match p {
        Pick::Pod(n) => nth(&pods, n),
        Pick::Container(n) => nth(&containers, n),
        Pick::Prefix(n, len) => {
            let all: Vec<String> = pods.into_iter().chain(containers).collect();
            let id = nth(&all, n);
            id[..id.len().min(usize::from(len % 4) + 1)].to_string()
        }
        Pick::Unknown => "f00dfeedf00dfeed".to_string(),
    }
}

/// The outcome of a call: its name and the code it ended with.
fn outcome<T>(name: &str, r: &CriResult<T>) -> String {
    match r {
        Ok(_) => format!("{name} ok"),
        Err(e) => format!("{name} {:?}", e.code()),
    }
}

/// Whether a call needs only shared access to the rig (and so may run
/// concurrently with another).
fn is_shared(c: Call) -> bool {
    !matches!(
        c,
        Call::FailHost(_) | Call::FailUndo(_) | Call::KillShim(..) | Call::Restart
    )
}

/// Makes one call that needs only shared access to the rig.
async fn shared_call(rig: &CallRig, c: Call) -> Option<String> {
    Some(match c {
        Call::RunPod {
            name,
            attempt,
            shared_pid,
            host_network,
        } => {
            let n = NAMES[usize::from(name) % NAMES.len()];
            let spec = PodSpec {
                name: n.to_string(),
                namespace: "default".into(),
                uid: format!("uid-{n}"),
                attempt: u32::from(attempt),
                shared_pid,
                host_network,
            };
            let r = rig.run_pod(&spec).await;
            rig.check_result("RunPodSandbox", &r);
            outcome("run", &r)
        }
        Call::StopPod(p) => {
            let r = rig.stop_pod(&resolve(rig, p).await).await;
            rig.check_result("StopPodSandbox", &r);
            outcome("stop pod", &r)
        }
        Call::RemovePod(p) => {
            let r = rig.remove_pod(&resolve(rig, p).await).await;
            rig.check_result("RemovePodSandbox", &r);
            outcome("remove pod", &r)
        }
        Call::CreateContainer {
            pod,
            name,
            attempt,
            privileged,
        } => {
            let n = NAMES[usize::from(name) % NAMES.len()];
            let id = resolve(rig, pod).await;
            let r = rig
                .create_container(&id, n, u32::from(attempt), privileged)
                .await;
            rig.check_result("CreateContainer", &r);
            outcome("create", &r)
        }
        Call::Start(p) => {
            let r = rig.start_container(&resolve(rig, p).await).await;
            rig.check_result("StartContainer", &r);
            outcome("start", &r)
        }
        Call::Stop(p, t) => {
            let r = rig
                .stop_container(&resolve(rig, p).await, i64::from(t))
                .await;
            rig.check_result("StopContainer", &r);
            outcome("stop", &r)
        }
        Call::Remove(p) => {
            let r = rig.remove_container(&resolve(rig, p).await).await;
            rig.check_result("RemoveContainer", &r);
            outcome("remove", &r)
        }
        Call::List => {
            let r = rig.list().await;
            rig.check_result("List", &r);
            outcome("list", &r)
        }
        Call::PollExits => {
            rig.poll_exits().await;
            "poll".into()
        }
        Call::ClearFailures => {
            rig.clear_failures();
            "clear".into()
        }
        _ => return None,
    })
}

/// Makes a call that changes the rig itself (failures, shims, restarts).
async fn exclusive_call(rig: &mut CallRig, c: Call) -> String {
    match c {
        Call::FailHost(n) => {
            rig.fail_host_call(usize::from(n));
            "fail".into()
        }
        Call::FailUndo(s) => {
            rig.fail_undo(usize::from(s));
            "fail undo".into()
        }
        Call::KillShim(p, leave) => {
            let id = resolve(rig, p).await;
            let pids: &[u32] = if leave { &[4242, 77] } else { &[] };
            rig.kill_shim(&id, pids).await;
            "kill".into()
        }
        Call::Restart => {
            let r = rig.restart().await;
            rig.check_result("restart", &r);
            outcome("restart", &r)
        }
        other => shared_call(rig, other).await.unwrap_or_default(),
    }
}

async fn sequence(rig: &mut CallRig, steps: Vec<Step>, trace: bool) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for step in steps {
        let started = std::time::Instant::now();
        if trace {
            eprintln!("{step:?}");
        }
        match step {
            Step::One(c) => {
                seen.insert(exclusive_call(rig, c).await);
            }
            Step::Both(a, b) if is_shared(a) && is_shared(b) => {
                let shared: &CallRig = rig;
                let (x, y) = tokio::join!(shared_call(shared, a), shared_call(shared, b));
                for o in [x, y].into_iter().flatten() {
                    seen.insert(format!("both {o}"));
                }
            }
            Step::Both(a, b) => {
                // A call that changes the rig is not made concurrently.
                seen.insert(exclusive_call(rig, a).await);
                seen.insert(exclusive_call(rig, b).await);
            }
        }
        if trace {
            eprintln!("  -> {seen:?} ({:?})", started.elapsed());
        }
        rig.check().await;
    }
    rig.clean_up().await;
    seen
}

impl Harness for Calls {
    fn run(&mut self, input: &[u8]) -> u64 {
        let steps = decode(input);
        let seen = self.rt.block_on(sequence(&mut self.rig, steps, self.trace));
        let parts: Vec<&str> = seen.iter().map(String::as_str).collect();
        tag(&parts)
    }
}

fn encode(calls: &[(u8, u8, u8)]) -> Vec<u8> {
    let mut w = Writer::default();
    for (op, a, b) in calls {
        w.u8(*op).u8(*a).u8(*b);
    }
    w.out
}

/// Seeds: what the kubelet does with a pod of two containers, and the same with a
/// failing host call, a dying shim, a restart and concurrent calls.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let run = (0, 0, 0);
    let create_web = (4, 0, 0);
    let create_db = (4, 0, 1);
    let start0 = (6, 3, 0);
    let start1 = (6, 3, 1);
    let stop_pod = (2, 0, 0);
    let remove_pod = (3, 0, 0);
    vec![
        (
            "pod-lifecycle",
            encode(&[
                run,
                create_web,
                create_db,
                start0,
                start1,
                (9, 0, 0),
                stop_pod,
                remove_pod,
            ]),
        ),
        (
            "failing-create",
            encode(&[
                run,
                (10, 2, 0),
                create_web,
                create_web,
                start0,
                (8, 3, 0),
                remove_pod,
            ]),
        ),
        (
            "shim-dies",
            encode(&[
                run,
                create_web,
                start0,
                (13, 0, 1),
                (14, 0, 0),
                (7, 3, 64),
                (8, 3, 0),
            ]),
        ),
        (
            "restart-midway",
            encode(&[
                run,
                create_web,
                (11, 4, 0),
                (8, 3, 0),
                (15, 0, 0),
                (12, 0, 0),
                (15, 0, 0),
                remove_pod,
            ]),
        ),
        (
            "concurrent",
            encode(&[
                run,
                (0x84, 0, 0),
                (4, 0, 0),
                (0x86, 3, 0),
                (3, 0, 0),
                (0x83, 0, 0),
                (2, 0, 0),
            ]),
        ),
    ]
}
