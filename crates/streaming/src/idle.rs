//! The idle timeout of an upgraded connection: [`Activity`] wraps the connection and
//! notes when a byte last moved either way; [`idle_watch`] cancels the stream's `gone`
//! once nothing has moved for the limit.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// When the last byte moved, in milliseconds since the connection was upgraded.
pub(crate) struct LastActive {
    start: Instant,
    ms: AtomicU64,
}

impl LastActive {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.ms.store(ms, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(now.saturating_sub(self.ms.load(Ordering::Relaxed)))
    }
}

/// An upgraded connection that notes when bytes last moved either way.
pub(crate) struct Activity<T> {
    inner: T,
    last: Arc<LastActive>,
}

impl<T> Activity<T> {
    pub(crate) fn new(inner: T) -> (Self, Arc<LastActive>) {
        let last = Arc::new(LastActive {
            start: Instant::now(),
            ms: AtomicU64::new(0),
        });
        (
            Activity {
                inner,
                last: last.clone(),
            },
            last,
        )
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Activity<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.last.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Activity<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.last.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Cancels `gone` once nothing has moved for `limit`; ends when `gone` is cancelled.
pub(crate) async fn idle_watch(last: Arc<LastActive>, limit: Duration, gone: CancellationToken) {
    let tick = (limit / 4).clamp(Duration::from_millis(100), Duration::from_secs(10));
    loop {
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            () = gone.cancelled() => return,
        }
        if last.idle() >= limit {
            info!(idle_secs = limit.as_secs(), "closing an idle stream");
            gone.cancel();
            return;
        }
    }
}
