//! The kubelet's retry rule for RunPodSandbox and CreateContainer (CRI-O's
//! resourcestore idea): the kubelet gives up on a slow call and retries with the same
//! metadata. The work of the first call runs in its own task, so a client that goes
//! away does not abort it half-way; a retry joins it (waiting if it is still running)
//! and gets its id. Once a result has been handed to a client, the same name is a
//! duplicate again (the store's name reservation answers AlreadyExists). A result
//! nobody collects is forgotten after [`UNCLAIMED_RESULT_TTL`]; the object stays, and
//! the kubelet finds it by listing. The timer that forgets it is cancelled when a
//! client collects the result, so only unclaimed results wait out the TTL: what is
//! kept is bounded by the creations in flight and the unclaimed ones, not by every
//! creation of the last ten minutes.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{Instrument, info};

use crate::error::{CriError, CriResult};

/// How long a finished result waits for a retry whose first client went away.
pub const UNCLAIMED_RESULT_TTL: Duration = Duration::from_secs(600);

type Outcome = Option<Result<String, Arc<CriError>>>;

struct Entry {
    result: watch::Receiver<Outcome>,
    /// The timer that forgets an unclaimed successful result; cancelled on a claim.
    expiry: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Entry {
    fn cancel_expiry(&self) {
        let timer = self.expiry.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(timer) = timer {
            timer.abort();
        }
    }
}

/// Creations in progress (or finished and not yet handed to a client), by name.
#[derive(Default)]
pub struct Creations {
    map: Mutex<HashMap<String, Arc<Entry>>>,
}

impl Creations {
    /// Runs `work` for `name` unless a creation of that name is in flight, in which
    /// case its outcome is awaited instead. `taken` is asked, under the lock, whether
    /// the name already belongs to an existing object (its error is returned as is).
    pub async fn run<F>(
        self: &Arc<Self>,
        name: &str,
        taken: impl FnOnce() -> CriResult<()>,
        work: F,
    ) -> CriResult<String>
    where
        F: Future<Output = CriResult<String>> + Send + 'static,
    {
        let entry = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(name) {
                Some(entry) => {
                    info!(%name, "a retry of a creation still in flight (or unclaimed): joining it");
                    entry.clone()
                }
                None => {
                    taken()?;
                    let (tx, rx) = watch::channel(None);
                    let entry = Arc::new(Entry {
                        result: rx,
                        expiry: Mutex::new(None),
                    });
                    map.insert(name.to_string(), entry.clone());
                    let this = self.clone();
                    let task_entry = entry.clone();
                    let name = name.to_string();
                    // In the first caller's span: its trace and logs show the work.
                    let work = work.in_current_span();
                    tokio::spawn(async move {
                        let result = work.await.map_err(Arc::new);
                        if result.is_err() {
                            this.forget(&name, &task_entry);
                        } else {
                            let (this, name) = (this.clone(), name.clone());
                            let expiring = task_entry.clone();
                            let timer = tokio::spawn(async move {
                                tokio::time::sleep(UNCLAIMED_RESULT_TTL).await;
                                this.forget(&name, &expiring);
                            });
                            // Set before the result is published, so a claim finds it.
                            *task_entry.expiry.lock().unwrap_or_else(|p| p.into_inner()) =
                                Some(timer.abort_handle());
                        }
                        let _ = tx.send(Some(result));
                    });
                    entry
                }
            }
        };
        let mut rx = entry.result.clone();
        let outcome = rx
            .wait_for(|o| o.is_some())
            .await
            .map_err(|_| CriError::Internal("the creation task vanished".into()))?
            .clone();
        let result = match outcome {
            Some(r) => r.map_err(CriError::Shared),
            None => Err(CriError::Internal(
                "a creation finished with no outcome".into(),
            )),
        };
        if result.is_ok() {
            // Handed to a client: from now on the same metadata is a duplicate.
            self.forget(name, &entry);
            entry.cancel_expiry();
        }
        result
    }

    /// Names with an entry (in flight or unclaimed).
    #[cfg(test)]
    pub fn names_tracked(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn forget(&self, name: &str, entry: &Arc<Entry>) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(name).is_some_and(|e| Arc::ptr_eq(e, entry)) {
            map.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_retry_joins_and_an_answered_name_is_a_duplicate() {
        let c = Arc::new(Creations::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let work = |runs: Arc<AtomicUsize>| async move {
            runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok("id-1".to_string())
        };
        // The first caller gives up early; the work goes on.
        let first = tokio::time::timeout(
            Duration::from_millis(10),
            c.run("n", || Ok(()), work(runs.clone())),
        )
        .await;
        assert!(first.is_err());
        // The retry joins it instead of starting another.
        let second = c.run("n", || Ok(()), work(runs.clone())).await;
        assert_eq!(second.unwrap(), "id-1");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Answered: the next call asks `taken` again.
        let third = c
            .run(
                "n",
                || Err(CriError::AlreadyExists("dup".into())),
                work(runs.clone()),
            )
            .await;
        assert!(matches!(third, Err(CriError::AlreadyExists(_))));
    }

    #[tokio::test]
    async fn claimed_results_keep_neither_an_entry_nor_a_timer() {
        let c = Arc::new(Creations::default());
        let metrics = tokio::runtime::Handle::current().metrics();
        let before = metrics.num_alive_tasks();
        for i in 0..200 {
            let id = c
                .run(
                    &format!("n{i}"),
                    || Ok(()),
                    async move { Ok(format!("id-{i}")) },
                )
                .await
                .unwrap();
            assert_eq!(id, format!("id-{i}"));
        }
        assert_eq!(c.names_tracked(), 0);
        // Aborted timers leave the runtime once it has run their cancellation.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while metrics.num_alive_tasks() > before {
            assert!(
                std::time::Instant::now() < deadline,
                "{} tasks still alive, {before} before",
                metrics.num_alive_tasks()
            );
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn an_unclaimed_result_waits_with_its_timer_until_a_retry_takes_it() {
        let c = Arc::new(Creations::default());
        let metrics = tokio::runtime::Handle::current().metrics();
        let before = metrics.num_alive_tasks();
        let gone = tokio::time::timeout(
            Duration::from_millis(10),
            c.run("n", || Ok(()), async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok("id".to_string())
            }),
        )
        .await;
        assert!(gone.is_err(), "the first client gave up");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(c.names_tracked(), 1, "the result waits for a retry");
        assert_eq!(metrics.num_alive_tasks(), before + 1, "with its timer");
        let retry = c.run("n", || Ok(()), async { Ok("other".to_string()) });
        assert_eq!(retry.await.unwrap(), "id");
        assert_eq!(c.names_tracked(), 0);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while metrics.num_alive_tasks() > before {
            assert!(
                std::time::Instant::now() < deadline,
                "the timer outlived the claim"
            );
            tokio::task::yield_now().await;
        }
    }
}
