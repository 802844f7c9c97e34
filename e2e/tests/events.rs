//! GetContainerEvents against a real criusd: what the kubelet's evented PLEG and
//! `crictl events` read.
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cri::ContainerEventType as E;
use cri::ContainerState as S;
use crius_e2e::v1 as cri;
use crius_e2e::*;

/// An event as a test looks at it.
#[derive(Debug, Clone)]
struct Seen {
    id: String,
    kind: E,
    at: i64,
    pod: Option<cri::PodSandboxStatus>,
    /// The state of the event's own container in the event's statuses.
    own: Option<S>,
    statuses: usize,
}

/// A subscriber collecting every event into a shared list, in arrival order.
struct Collector {
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<Option<tonic::Status>>,
}

impl Collector {
    async fn start(rt: &Rt) -> Collector {
        let mut rt = rt.clone();
        let mut stream = rt
            .get_container_events(cri::GetEventsRequest {})
            .await
            .expect("GetContainerEvents")
            .into_inner();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let out = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                match stream.message().await {
                    Ok(Some(ev)) => {
                        let own = ev
                            .containers_statuses
                            .iter()
                            .find(|s| s.id == ev.container_id)
                            .map(|s| s.state());
                        out.lock().unwrap().push(Seen {
                            id: ev.container_id.clone(),
                            kind: ev.container_event_type(),
                            at: ev.created_at,
                            pod: ev.pod_sandbox_status.clone(),
                            own,
                            statuses: ev.containers_statuses.len(),
                        });
                    }
                    Ok(None) => return None,
                    Err(e) => return Some(e),
                }
            }
        });
        Collector { seen, task }
    }

    fn events(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until `n` events have arrived.
    async fn wait_for(&self, n: usize, what: &str) -> Vec<Seen> {
        eventually(Duration::from_secs(240), what, || async {
            let got = self.events();
            (got.len() >= n).then_some(got)
        })
        .await
    }

    /// Waits until an event of `kind` about `id` has arrived.
    async fn wait_event(&self, id: &str, kind: E) -> Seen {
        eventually(DEADLINE, &format!("{kind:?} of {id}"), || async {
            self.events()
                .into_iter()
                .find(|e| e.id == id && e.kind == kind)
        })
        .await
    }
}

/// The events about each id, in order.
fn by_id(events: &[Seen]) -> HashMap<String, Vec<Seen>> {
    let mut out: HashMap<String, Vec<Seen>> = HashMap::new();
    for e in events {
        out.entry(e.id.clone()).or_default().push(e.clone());
    }
    out
}

fn sleeper(name: &str, image: &str) -> ContainerBuilder {
    ContainerBuilder::new(name, image).command(["/bin/sh", "-c", "exec sleep 3600"])
}

/// One container's whole life: created, started, stopped (by StopContainer, or by
/// exiting on its own), removed.
async fn churn_one(mut rt: Rt, pod: String, image: String, n: usize) -> String {
    let exits_itself = n % 10 == 0;
    let cfg = if exits_itself {
        ContainerBuilder::new(&format!("c{n}"), &image).command(["/bin/sh", "-c", "exit 0"])
    } else {
        sleeper(&format!("c{n}"), &image)
    };
    let id = create_container(&mut rt, &pod, cfg, None)
        .await
        .expect("CreateContainer");
    start_container(&mut rt, &id).await.expect("StartContainer");
    if exits_itself {
        status_when(&rt, &id, "the container to exit by itself", |st| {
            st.state() == S::ContainerExited
        })
        .await;
    } else {
        rt.stop_container(cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        })
        .await
        .expect("StopContainer");
    }
    rt.remove_container(cri::RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .expect("RemoveContainer");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_churn_of_100_containers_gives_each_subscriber_every_event_once_in_order() {
    let mut f = Fixture::start("ev-churn", Options::default()).await;
    let image = f.pull_busybox().await;
    let a = Collector::start(&f.d.rt).await;
    let b = Collector::start(&f.d.rt).await;
    let mut pods = Vec::new();
    for p in 0..4 {
        pods.push(
            f.pod(PodBuilder::new(&format!("ev-churn-{p}")).log_directory(f.logs()))
                .await,
        );
    }
    // Each pod: CREATED and STARTED with the sandbox id.
    let pod_events = a.wait_for(8, "the pods' events").await;
    for pod in &pods {
        let kinds: Vec<E> = by_id(&pod_events)[pod].iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [E::ContainerCreatedEvent, E::ContainerStartedEvent]);
    }

    const N: usize = 100;
    let limit = Arc::new(tokio::sync::Semaphore::new(12));
    let mut tasks = Vec::new();
    for n in 0..N {
        let (rt, pod, image, limit) = (
            f.d.rt.clone(),
            pods[n % pods.len()].clone(),
            image.clone(),
            limit.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _slot = limit.acquire_owned().await.unwrap();
            churn_one(rt, pod, image, n).await
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    for pod in &pods {
        remove_pod(&mut f.d.rt, pod).await.unwrap();
    }
    // 8 pod events so far, 4 per container, and STOPPED and DELETED for each pod.
    let want = 8 + 4 * N + 2 * pods.len();
    a.wait_for(want, "every event").await;
    b.wait_for(want, "every event (second subscriber)").await;
    // Nothing more comes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (got_a, got_b) = (a.events(), b.events());
    assert_eq!(got_a.len(), want, "no event twice");
    assert_eq!(
        got_a
            .iter()
            .map(|e| (&e.id, e.kind, e.at))
            .collect::<Vec<_>>(),
        got_b
            .iter()
            .map(|e| (&e.id, e.kind, e.at))
            .collect::<Vec<_>>(),
        "both subscribers see the same stream"
    );
    assert!(
        got_a.windows(2).all(|w| w[0].at < w[1].at),
        "created_at rises strictly along the stream"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    assert!(
        got_a
            .iter()
            .all(|e| e.at > now - 600_000_000_000 && e.at <= now)
    );

    let per = by_id(&got_a);
    for id in &ids {
        let evs = &per[id];
        let seq: Vec<(E, Option<S>)> = evs.iter().map(|e| (e.kind, e.own)).collect();
        assert_eq!(
            seq,
            [
                (E::ContainerCreatedEvent, Some(S::ContainerCreated)),
                (E::ContainerStartedEvent, Some(S::ContainerRunning)),
                (E::ContainerStoppedEvent, Some(S::ContainerExited)),
                (E::ContainerDeletedEvent, None),
            ],
            "container {id}: each event carries the container's status after it"
        );
        for e in evs {
            let pod = e.pod.as_ref().expect("the pod's status");
            assert!(pods.contains(&pod.id));
            assert_eq!(pod.state(), cri::PodSandboxState::SandboxReady);
            assert!(pod.metadata.as_ref().unwrap().name.starts_with("ev-churn-"));
        }
    }
    for pod in &pods {
        let evs = &per[pod];
        let seq: Vec<E> = evs.iter().map(|e| e.kind).collect();
        assert_eq!(
            seq,
            [
                E::ContainerCreatedEvent,
                E::ContainerStartedEvent,
                E::ContainerStoppedEvent,
                E::ContainerDeletedEvent,
            ]
        );
        let last = evs.last().unwrap();
        assert_eq!(last.statuses, 0, "a removed pod has no containers");
        let st = last.pod.as_ref().expect("the removed pod's last status");
        assert_eq!(st.state(), cri::PodSandboxState::SandboxNotready);
    }
    drop((got_b, a.task, b.task));
    f.finish().await;
}

/// The pid of the crius-shim serving container `id`.
fn shim_pid(id: &str) -> u32 {
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let exe = std::fs::read_link(e.path().join("exe")).unwrap_or_default();
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if exe.file_name().is_some_and(|n| n == "crius-shim")
            && String::from_utf8_lossy(&cmdline).contains(id)
        {
            return pid;
        }
    }
    panic!("no crius-shim for container {id}");
}

#[tokio::test]
async fn stops_of_every_kind_are_reported_and_pod_status_matches_the_events() {
    let (mut f, image, pod) = Fixture::with_busybox_pod("ev-stop", Options::default()).await;
    let sub = Collector::start(&f.d.rt).await;
    // One exits by itself, one's shim is killed and then its init, one never starts.
    let exits = f
        .run(
            &pod,
            ContainerBuilder::new("exits", &image).command(["/bin/sh", "-c", "sleep 1; exit 3"]),
        )
        .await;
    let orphan = f.run(&pod, sleeper("orphan", &image)).await;
    let never = f.create(&pod, sleeper("never", &image)).await.unwrap();

    let stopped = sub.wait_event(&exits, E::ContainerStoppedEvent).await;
    assert_eq!(stopped.own, Some(S::ContainerExited));

    let verbose =
        f.d.rt
            .container_status(cri::ContainerStatusRequest {
                container_id: orphan.clone(),
                verbose: true,
            })
            .await
            .unwrap()
            .into_inner();
    let info: serde_json::Value = serde_json::from_str(&verbose.info["info"]).unwrap();
    let init = info["pid"].as_u64().unwrap() as i32;
    let shim = shim_pid(&orphan) as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(shim), nix::sys::signal::SIGKILL).unwrap();
    // While its process runs it is still running: no event.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !sub.events()
            .iter()
            .any(|e| e.id == orphan && e.kind == E::ContainerStoppedEvent),
        "not stopped while its init runs"
    );
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(init), nix::sys::signal::SIGKILL).unwrap();
    let stopped = sub.wait_event(&orphan, E::ContainerStoppedEvent).await;
    assert_eq!(stopped.own, Some(S::ContainerExited));

    f.d.rt
        .stop_container(cri::StopContainerRequest {
            container_id: never.clone(),
            timeout: 0,
        })
        .await
        .unwrap();
    let last = sub.wait_event(&never, E::ContainerStoppedEvent).await;

    // PodSandboxStatus: a timestamp of the events' clock, after the last event, and
    // the statuses of the pod's containers with it (the evented PLEG reads both).
    let resp = pod_status(&mut f.d.rt, &pod, false).await.unwrap();
    assert!(
        resp.timestamp > last.at,
        "{} <= {}",
        resp.timestamp,
        last.at
    );
    let mut states: Vec<(String, S)> = resp
        .containers_statuses
        .iter()
        .map(|s| (s.id.clone(), s.state()))
        .collect();
    states.sort();
    let mut want = vec![
        (exits.clone(), S::ContainerExited),
        (orphan.clone(), S::ContainerExited),
        (never.clone(), S::ContainerExited),
    ];
    want.sort();
    assert_eq!(states, want);
    let exits_status = resp
        .containers_statuses
        .iter()
        .find(|s| s.id == exits)
        .unwrap();
    assert_eq!(exits_status.exit_code, 3);

    // Each container: its events once, in order.
    let per = by_id(&sub.events());
    let kinds = |id: &str| per[id].iter().map(|e| e.kind).collect::<Vec<_>>();
    assert_eq!(
        kinds(&exits),
        [
            E::ContainerCreatedEvent,
            E::ContainerStartedEvent,
            E::ContainerStoppedEvent
        ]
    );
    assert_eq!(
        kinds(&orphan),
        [
            E::ContainerCreatedEvent,
            E::ContainerStartedEvent,
            E::ContainerStoppedEvent
        ]
    );
    assert_eq!(
        kinds(&never),
        [E::ContainerCreatedEvent, E::ContainerStoppedEvent]
    );
    f.finish().await;
}
