//! Container events (GetContainerEvents): the kubelet's evented PLEG and `crictl
//! events` subscribe here; the managers publish one event per state change.
//!
//! - Every event carries the pod's `PodSandboxStatus` and the statuses of all the
//!   pod's containers, read after its `created_at` was taken: the statuses are at
//!   least as new as the timestamp says, which is what the kubelet's pod cache relies
//!   on (it keeps the status with the newest timestamp).
//! - Timestamps come from one clock ([`Clock`]): nanoseconds since the epoch, each
//!   one above the one before, so they never go backwards, not even if the wall clock
//!   does. PodSandboxStatus takes its `timestamp` from the same clock.
//! - Events are stamped, read and handed to the subscribers one at a time (an async
//!   lock), so every subscriber sees them in timestamp order.
//! - A subscriber has a bounded buffer ([`BUFFER`] events). Handing an event over
//!   never waits: a subscriber whose buffer is full is dropped (its stream ends with
//!   ResourceExhausted after what was buffered), with a log line; the kubelet then
//!   relists. A lifecycle call never waits for a slow subscriber.
//!
//! Pods are reported the way containerd does, with the sandbox id as `container_id`:
//! CREATED and STARTED when RunPodSandbox has made the pod, STOPPED when
//! StopPodSandbox turns it NotReady, DELETED when RemovePodSandbox has removed it (its
//! last status, with no containers). The CRI has no event type of its own for pods.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crius_cri_api::v1 as cri;
use crius_store::{ContainerState, PodRecord, Store};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::error::CriResult;
use crate::util::now_nanos;

/// Events buffered per subscriber before it counts as too slow and is dropped.
pub const BUFFER: usize = 1000;

/// A clock of nanoseconds since the epoch that never repeats or goes back: each
/// reading is the wall clock, or one above the last reading if that is not above it.
#[derive(Default)]
pub struct Clock {
    last: Mutex<i64>,
}

impl Clock {
    /// The next timestamp given the wall clock reads `wall`.
    pub fn next_after(&self, wall: i64) -> i64 {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let t = wall.max(last.saturating_add(1));
        *last = t;
        t
    }

    /// The next timestamp.
    pub fn now(&self) -> i64 {
        self.next_after(now_nanos())
    }
}

/// Why a subscription ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow {
    pub buffer: usize,
}

struct Subscriber<T> {
    id: u64,
    tx: mpsc::Sender<T>,
    overflowed: Arc<AtomicBool>,
}

struct Subscribers<T> {
    list: Vec<Subscriber<T>>,
    next_id: u64,
    /// Closed (the daemon is stopping): subscriptions end at once.
    closed: bool,
}

/// A fan-out of events to subscribers, each with its own bounded buffer.
pub struct Bus<T> {
    subscribers: Mutex<Subscribers<T>>,
    buffer: usize,
}

/// One subscriber's end: the events published since it subscribed, in order.
pub struct Subscription<T> {
    rx: mpsc::Receiver<T>,
    overflowed: Arc<AtomicBool>,
    buffer: usize,
    done: bool,
}

impl<T> Subscription<T> {
    /// The next event; `Some(Err)` once, if the subscriber fell too far behind and was
    /// dropped (after the events buffered before that); `None` at the end.
    pub async fn next(&mut self) -> Option<Result<T, Overflow>> {
        if self.done {
            return None;
        }
        match self.rx.recv().await {
            Some(ev) => Some(Ok(ev)),
            None => {
                self.done = true;
                self.overflowed
                    .load(Ordering::Acquire)
                    .then_some(Err(Overflow {
                        buffer: self.buffer,
                    }))
            }
        }
    }
}

impl<T: Clone> Bus<T> {
    pub fn new(buffer: usize) -> Bus<T> {
        Bus {
            subscribers: Mutex::new(Subscribers {
                list: Vec::new(),
                next_id: 0,
                closed: false,
            }),
            buffer: buffer.max(1),
        }
    }

    /// A new subscriber, which gets every event published from now on.
    pub fn subscribe(&self) -> Subscription<T> {
        let (tx, rx) = mpsc::channel(self.buffer);
        let overflowed = Arc::new(AtomicBool::new(false));
        let mut s = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        let id = s.next_id;
        s.next_id += 1;
        if !s.closed {
            s.list.push(Subscriber {
                id,
                tx,
                overflowed: overflowed.clone(),
            });
        }
        debug!(
            subscriber = id,
            subscribers = s.list.len(),
            "container events: new subscriber"
        );
        Subscription {
            rx,
            overflowed,
            buffer: self.buffer,
            done: false,
        }
    }

    /// Ends every subscription (after what it has buffered), and every one made from
    /// now on: a server shutting down waits for its open streams.
    pub fn close(&self) {
        let mut s = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        s.closed = true;
        s.list.clear();
    }

    /// How many subscribers are attached.
    pub fn subscribers(&self) -> usize {
        let s = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        s.list.len()
    }

    /// Hands `event` to every subscriber without waiting: one whose buffer is full is
    /// dropped, one that went away is forgotten. Returns how many got it.
    pub fn publish(&self, event: &T) -> usize {
        let mut s = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        let buffer = self.buffer;
        s.list.retain(|sub| match sub.tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                sub.overflowed.store(true, Ordering::Release);
                warn!(
                    subscriber = sub.id,
                    buffer, "a container events subscriber fell {buffer} events behind; its stream is ended (it has to relist)"
                );
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                debug!(subscriber = sub.id, "container events: subscriber gone");
                false
            }
        });
        s.list.len()
    }
}

/// What happened to a container (or, with the sandbox id, to a pod).
pub type Kind = cri::ContainerEventType;

/// The daemon's container events: the bus, the clock and what an event is made of.
pub struct Events {
    store: Store,
    bus: Bus<cri::ContainerEventResponse>,
    clock: Clock,
    /// Held while an event is stamped, read and published, so that the stream is in
    /// timestamp order.
    order: tokio::sync::Mutex<()>,
}

impl Events {
    pub fn new(store: Store) -> Events {
        Events {
            store,
            bus: Bus::new(BUFFER),
            clock: Clock::default(),
            order: tokio::sync::Mutex::new(()),
        }
    }

    /// A new subscriber (GetContainerEvents).
    pub fn subscribe(&self) -> Subscription<cri::ContainerEventResponse> {
        self.bus.subscribe()
    }

    /// Ends every subscription (the daemon is stopping).
    pub fn close(&self) {
        self.bus.close();
    }

    /// A timestamp from the events' clock (PodSandboxStatus's `timestamp`).
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// The statuses of a pod's containers, oldest first (none being created).
    pub async fn container_statuses(&self, pod_id: &str) -> CriResult<Vec<cri::ContainerStatus>> {
        let mut recs = self.store.containers_of_pod(pod_id).await?;
        recs.retain(|c| c.state != ContainerState::Creating);
        recs.sort_by_key(|c| c.created_at);
        Ok(recs.iter().map(crate::container::status_of).collect())
    }

    /// Publishes an event about container `container_id` of pod `pod_id`.
    pub async fn container(&self, kind: Kind, container_id: &str, pod_id: &str) {
        self.publish(kind, container_id, pod_id, None).await
    }

    /// Publishes an event about a pod (its id as the container id). `gone`: the pod's
    /// last record, for the event of its removal (the store no longer has it).
    pub async fn pod(&self, kind: Kind, pod_id: &str, gone: Option<&PodRecord>) {
        self.publish(kind, pod_id, pod_id, gone).await
    }

    async fn publish(&self, kind: Kind, id: &str, pod_id: &str, gone: Option<&PodRecord>) {
        if self.bus.subscribers() == 0 {
            return;
        }
        let _order = self.order.lock().await;
        let created_at = self.clock.now();
        let pod = match gone {
            Some(rec) => Ok(Some(rec.clone())),
            None => self.store.pod(pod_id).await,
        };
        let pod_sandbox_status = match pod {
            Ok(p) => p.as_ref().map(crate::sandbox::status_of),
            Err(e) => {
                warn!(pod_id, error = %e, "reading the pod for a container event");
                None
            }
        };
        let containers_statuses = match gone {
            Some(_) => Vec::new(),
            None => self.container_statuses(pod_id).await.unwrap_or_else(|e| {
                warn!(pod_id, error = %e, "reading the pod's containers for a container event");
                Vec::new()
            }),
        };
        let event = cri::ContainerEventResponse {
            container_id: id.to_string(),
            container_event_type: kind as i32,
            created_at,
            pod_sandbox_status,
            containers_statuses,
        };
        let n = self.bus.publish(&event);
        debug!(container_id = id, ?kind, subscribers = n, "container event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_never_repeats_or_goes_back() {
        let c = Clock::default();
        assert_eq!(c.next_after(100), 100);
        assert_eq!(c.next_after(100), 101, "the same wall time: one above");
        assert_eq!(c.next_after(50), 102, "the wall clock went back");
        assert_eq!(c.next_after(500), 500);
        let mut last = 0;
        for _ in 0..10_000 {
            let t = c.now();
            assert!(t > last);
            last = t;
        }
    }

    #[tokio::test]
    async fn every_subscriber_gets_every_event_in_order() {
        let bus: Bus<u32> = Bus::new(100);
        let mut a = bus.subscribe();
        let mut b = bus.subscribe();
        for i in 0..50 {
            assert_eq!(bus.publish(&i), 2);
        }
        for sub in [&mut a, &mut b] {
            for i in 0..50 {
                assert_eq!(sub.next().await, Some(Ok(i)));
            }
        }
        // A late subscriber sees only what comes after it.
        let mut c = bus.subscribe();
        bus.publish(&99);
        assert_eq!(c.next().await, Some(Ok(99)));
        assert_eq!(a.next().await, Some(Ok(99)));
    }

    #[tokio::test]
    async fn a_full_subscriber_is_dropped_without_blocking_the_others() {
        let bus: Bus<u32> = Bus::new(3);
        let mut slow = bus.subscribe();
        let mut fast = bus.subscribe();
        for i in 0..3 {
            assert_eq!(bus.publish(&i), 2);
            assert_eq!(fast.next().await, Some(Ok(i)));
        }
        // The slow one's buffer is full: the fourth event drops it, at once.
        assert_eq!(bus.publish(&3), 1);
        assert_eq!(bus.publish(&4), 1);
        assert_eq!(fast.next().await, Some(Ok(3)));
        assert_eq!(fast.next().await, Some(Ok(4)));
        // It still gets what was buffered, then the overflow, then the end.
        for i in 0..3 {
            assert_eq!(slow.next().await, Some(Ok(i)));
        }
        assert_eq!(slow.next().await, Some(Err(Overflow { buffer: 3 })));
        assert_eq!(slow.next().await, None);
        assert_eq!(bus.subscribers(), 1);
    }

    #[tokio::test]
    async fn closing_ends_every_subscription_cleanly() {
        let bus: Bus<u32> = Bus::new(3);
        let mut a = bus.subscribe();
        bus.publish(&1);
        bus.close();
        assert_eq!(a.next().await, Some(Ok(1)));
        assert_eq!(a.next().await, None, "no overflow: a clean end");
        let mut late = bus.subscribe();
        assert_eq!(late.next().await, None);
        assert_eq!(bus.publish(&2), 0);
    }

    #[tokio::test]
    async fn a_subscriber_that_goes_away_is_forgotten() {
        let bus: Bus<u32> = Bus::new(3);
        let gone = bus.subscribe();
        let mut kept = bus.subscribe();
        drop(gone);
        assert_eq!(bus.publish(&7), 1);
        assert_eq!(bus.subscribers(), 1);
        assert_eq!(kept.next().await, Some(Ok(7)));
    }

    #[tokio::test]
    async fn concurrent_publishers_lose_and_duplicate_nothing() {
        let bus: Arc<Bus<(u32, u32)>> = Arc::new(Bus::new(10_000));
        let mut sub = bus.subscribe();
        let mut tasks = Vec::new();
        for p in 0..8u32 {
            let bus = bus.clone();
            tasks.push(std::thread::spawn(move || {
                for i in 0..500u32 {
                    bus.publish(&(p, i));
                }
            }));
        }
        for t in tasks {
            t.join().unwrap();
        }
        let mut next = [0u32; 8];
        for _ in 0..4000 {
            let (p, i) = sub.next().await.unwrap().unwrap();
            assert_eq!(i, next[p as usize], "each publisher's events in its order");
            next[p as usize] += 1;
        }
        assert_eq!(next, [500; 8]);
    }
}
