//! Single-use, expiring tokens that stand for one cached streaming request.
//!
//! Exec, Attach and PortForward validate their request and park it here; the URL they
//! return carries the token. The streaming server consumes the token on the first
//! connection that presents it: a token works once, and only before it expires. As in
//! the kubelet's own streaming server, the number of requests waiting is capped, so a
//! caller that never connects cannot grow the cache without bound.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::StreamError;

/// Random bytes per token (160 bits; the URL carries them hex-encoded).
const TOKEN_BYTES: usize = 20;

/// The token cache.
pub(crate) struct Tokens<T> {
    ttl: Duration,
    max: usize,
    inner: Mutex<HashMap<String, (Instant, T)>>,
}

impl<T> Tokens<T> {
    pub(crate) fn new(ttl: Duration, max: usize) -> Self {
        Tokens {
            ttl,
            max,
            inner: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, T)>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Parks `req` and returns its new token.
    pub(crate) fn insert(&self, req: T) -> Result<String, StreamError> {
        self.insert_at(req, Instant::now())
    }

    fn insert_at(&self, req: T, now: Instant) -> Result<String, StreamError> {
        let mut buf = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut buf).map_err(StreamError::Random)?;
        let token = hex::encode(buf);
        let mut map = self.lock();
        map.retain(|_, (expires, _)| *expires > now);
        if map.len() >= self.max {
            return Err(StreamError::TooManyPending { max: self.max });
        }
        map.insert(token.clone(), (now + self.ttl, req));
        Ok(token)
    }

    /// Takes the request a token stands for: `None` when it is unknown, used or expired.
    pub(crate) fn consume(&self, token: &str) -> Option<T> {
        self.consume_at(token, Instant::now())
    }

    fn consume_at(&self, token: &str, now: Instant) -> Option<T> {
        let (expires, req) = self.lock().remove(token)?;
        (expires > now).then_some(req)
    }

    /// Requests waiting (expired ones included until the next insert).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_works_once() {
        let t = Tokens::new(Duration::from_secs(60), 10);
        let tok = t.insert(7).unwrap();
        assert_eq!(tok.len(), 2 * TOKEN_BYTES);
        assert!(tok.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(t.consume(&tok), Some(7));
        assert_eq!(t.consume(&tok), None);
        assert_eq!(t.consume("nope"), None);
    }

    #[test]
    fn tokens_are_distinct() {
        let t = Tokens::new(Duration::from_secs(60), 1000);
        let mut seen = std::collections::HashSet::new();
        for i in 0..500 {
            assert!(seen.insert(t.insert(i).unwrap()));
        }
    }

    #[test]
    fn an_expired_token_is_refused_and_dropped() {
        let t = Tokens::new(Duration::from_secs(5), 10);
        let now = Instant::now();
        let tok = t.insert_at(1, now).unwrap();
        assert_eq!(t.consume_at(&tok, now + Duration::from_secs(6)), None);
        // Removed, not just refused.
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn the_cache_is_bounded_and_expiry_frees_room() {
        let t = Tokens::new(Duration::from_secs(5), 2);
        let now = Instant::now();
        t.insert_at(1, now).unwrap();
        t.insert_at(2, now).unwrap();
        assert!(matches!(
            t.insert_at(3, now),
            Err(StreamError::TooManyPending { max: 2 })
        ));
        // Once the first two expire there is room again.
        let later = now + Duration::from_secs(6);
        let tok = t.insert_at(4, later).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t.consume_at(&tok, later), Some(4));
    }
}
