//! Single flight: concurrent callers asking for the same key share one execution.
//! Used so that concurrent pulls of one image, or of images sharing a layer, fetch
//! and unpack each blob once.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use tokio::sync::watch;
use tracing::Instrument;

/// Where the outcome of one execution is published.
type Outcome<V, E> = watch::Receiver<Option<Result<V, E>>>;

/// Shares the work for a key among concurrent callers.
pub(crate) struct SingleFlight<V: Clone + Send + Sync + 'static, E: Clone + Send + Sync + 'static> {
    inflight: Mutex<HashMap<String, Outcome<V, E>>>,
}

impl<V: Clone + Send + Sync + 'static, E: Clone + Send + Sync + 'static> Default
    for SingleFlight<V, E>
{
    fn default() -> Self {
        SingleFlight {
            inflight: Mutex::new(HashMap::new()),
        }
    }
}

impl<V: Clone + Send + Sync + 'static, E: Clone + Send + Sync + 'static> SingleFlight<V, E> {
    /// Runs `work` for `key` unless it is already running, and returns its result.
    /// The work runs in its own task (so it owns what it needs): a caller that goes
    /// away does not cancel it.
    pub(crate) async fn run<F>(&self, key: &str, lost: E, work: F) -> Result<V, E>
    where
        F: Future<Output = Result<V, E>> + Send + 'static,
    {
        let mut rx = {
            let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(key) {
                Some(rx) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    map.insert(key.to_string(), rx.clone());
                    // In the first caller's span: its trace shows the work.
                    tokio::spawn(
                        async move {
                            let result = work.await;
                            let _ = tx.send(Some(result));
                        }
                        .in_current_span(),
                    );
                    rx
                }
            }
        };
        let result = match rx.wait_for(|v| v.is_some()).await {
            Ok(v) => v.clone().unwrap_or(Err(lost.clone())),
            Err(_) => Err(lost),
        };
        let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(key).is_some_and(|r| r.same_channel(&rx)) {
            map.remove(key);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let sf: Arc<SingleFlight<u32, String>> = Arc::new(SingleFlight::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let sf = sf.clone();
            let runs = runs.clone();
            tasks.push(tokio::spawn(async move {
                sf.run("k", "lost".to_string(), async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    Ok(7)
                })
                .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(7));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Done: the next call runs again.
        let again = sf.run("k", "lost".to_string(), async { Ok(8) }).await;
        assert_eq!(again, Ok(8));
    }
}
