//! Send-side flow-control bookkeeping for SPDY/3.1.
//!
//! SPDY/3.1 keeps two send windows: one per stream (initially 64 KiB, changed
//! by SETTINGS_INITIAL_WINDOW_SIZE) and one for the whole session (always
//! 64 KiB initially). Data may be sent only while both are positive; the peer
//! grows them with WINDOW_UPDATE frames, stream id 0 meaning the session.
//!
//! Note that Kubernetes' own SPDY stack (moby/spdystream) never sends
//! WINDOW_UPDATE, so a peer of that kind must not be held to these windows.

use std::collections::HashMap;

use crate::FlowError;
use crate::frame::{Settings, WindowUpdate, setting_id};

/// The initial window of the session and of every stream, 64 KiB.
pub const DEFAULT_INITIAL_WINDOW: u32 = 65_536;

/// The largest window SPDY/3.1 allows, 2^31-1.
pub const MAX_WINDOW: u32 = 0x7FFF_FFFF;

/// Send windows of one connection: the session's and each open stream's.
#[derive(Debug, Clone)]
pub struct FlowControl {
    initial: i64,
    session: i64,
    streams: HashMap<u32, i64>,
}

impl Default for FlowControl {
    fn default() -> Self {
        Self::new()
    }
}

impl FlowControl {
    /// Windows at their SPDY/3.1 defaults, with no streams.
    pub fn new() -> Self {
        Self {
            initial: i64::from(DEFAULT_INITIAL_WINDOW),
            session: i64::from(DEFAULT_INITIAL_WINDOW),
            streams: HashMap::new(),
        }
    }

    /// Starts tracking stream `id` with the current initial window.
    pub fn add_stream(&mut self, id: u32) -> Result<(), FlowError> {
        if id == 0 {
            return Err(FlowError::UnknownStream(0));
        }
        if self.streams.contains_key(&id) {
            return Err(FlowError::DuplicateStream(id));
        }
        self.streams.insert(id, self.initial);
        Ok(())
    }

    /// Stops tracking stream `id`; returns whether it was tracked.
    pub fn remove_stream(&mut self, id: u32) -> bool {
        self.streams.remove(&id).is_some()
    }

    /// The session send window.
    pub fn session_window(&self) -> i64 {
        self.session
    }

    /// The send window of stream `id` (negative after the peer shrank the
    /// initial window below what was already sent), if tracked.
    pub fn stream_window(&self, id: u32) -> Option<i64> {
        self.streams.get(&id).copied()
    }

    /// How many bytes of data may be sent on stream `id` now: the smaller of
    /// the stream and session windows, 0 if either is exhausted or the stream
    /// is unknown.
    pub fn sendable(&self, id: u32) -> usize {
        let stream = self.streams.get(&id).copied().unwrap_or(0);
        usize::try_from(stream.min(self.session).max(0)).unwrap_or(0)
    }

    /// Records that `n` data bytes were sent on stream `id`.
    pub fn consume(&mut self, id: u32, n: usize) -> Result<(), FlowError> {
        let available = self.sendable(id);
        let window = self
            .streams
            .get_mut(&id)
            .ok_or(FlowError::UnknownStream(id))?;
        if n > available {
            return Err(FlowError::WindowExceeded {
                stream_id: id,
                requested: n,
                available,
            });
        }
        // n <= available <= 2^31-1, so this is lossless.
        let n = n as i64;
        *window -= n;
        self.session -= n;
        Ok(())
    }

    /// Applies a received WINDOW_UPDATE. Updates for streams that are not
    /// tracked (for example already closed) are ignored, as the
    /// specification allows them to race with the close.
    pub fn apply_window_update(&mut self, update: &WindowUpdate) -> Result<(), FlowError> {
        let WindowUpdate { stream_id, delta } = *update;
        if delta == 0 || delta > MAX_WINDOW {
            return Err(FlowError::InvalidDelta(delta));
        }
        let window = if stream_id == 0 {
            &mut self.session
        } else {
            match self.streams.get_mut(&stream_id) {
                Some(w) => w,
                None => return Ok(()),
            }
        };
        let grown = *window + i64::from(delta);
        if grown > i64::from(MAX_WINDOW) {
            return Err(FlowError::WindowOverflow(stream_id));
        }
        *window = grown;
        Ok(())
    }

    /// Applies a new SETTINGS_INITIAL_WINDOW_SIZE: every tracked stream's
    /// window moves by the difference (the session window is unaffected).
    pub fn set_initial_window(&mut self, size: u32) -> Result<(), FlowError> {
        if size > MAX_WINDOW {
            return Err(FlowError::InvalidInitialWindow(size));
        }
        let new = i64::from(size);
        let diff = new - self.initial;
        if let Some((&id, _)) = self
            .streams
            .iter()
            .find(|&(_, &w)| w + diff > i64::from(MAX_WINDOW))
        {
            return Err(FlowError::WindowOverflow(id));
        }
        for w in self.streams.values_mut() {
            *w += diff;
        }
        self.initial = new;
        Ok(())
    }

    /// Applies the flow-control part of a received SETTINGS frame.
    pub fn apply_settings(&mut self, settings: &Settings) -> Result<(), FlowError> {
        match settings.get(setting_id::INITIAL_WINDOW_SIZE) {
            Some(size) => self.set_initial_window(size),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Setting;

    fn update(stream_id: u32, delta: u32) -> WindowUpdate {
        WindowUpdate { stream_id, delta }
    }

    #[test]
    fn starts_at_64k_and_blocks_when_spent() -> Result<(), FlowError> {
        let mut fc = FlowControl::new();
        fc.add_stream(1)?;
        assert_eq!(fc.sendable(1), 65_536);
        fc.consume(1, 65_000)?;
        assert_eq!(fc.sendable(1), 536);
        assert_eq!(
            fc.consume(1, 537),
            Err(FlowError::WindowExceeded {
                stream_id: 1,
                requested: 537,
                available: 536
            })
        );
        fc.consume(1, 536)?;
        assert_eq!(fc.sendable(1), 0);
        fc.apply_window_update(&update(1, 1000))?;
        // The session window is still empty.
        assert_eq!(fc.sendable(1), 0);
        fc.apply_window_update(&update(0, 400))?;
        assert_eq!(fc.sendable(1), 400);
        Ok(())
    }

    #[test]
    fn session_window_is_shared_by_streams() -> Result<(), FlowError> {
        let mut fc = FlowControl::new();
        fc.add_stream(1)?;
        fc.add_stream(3)?;
        fc.consume(1, 60_000)?;
        assert_eq!(fc.sendable(3), 5_536);
        assert_eq!(fc.stream_window(3), Some(65_536));
        assert_eq!(fc.session_window(), 5_536);
        Ok(())
    }

    #[test]
    fn unknown_and_duplicate_streams() -> Result<(), FlowError> {
        let mut fc = FlowControl::new();
        assert_eq!(fc.sendable(9), 0);
        assert_eq!(fc.consume(9, 1), Err(FlowError::UnknownStream(9)));
        assert_eq!(fc.add_stream(0), Err(FlowError::UnknownStream(0)));
        fc.add_stream(5)?;
        assert_eq!(fc.add_stream(5), Err(FlowError::DuplicateStream(5)));
        // Updates for closed streams are ignored.
        assert!(fc.remove_stream(5));
        assert!(!fc.remove_stream(5));
        fc.apply_window_update(&update(5, 10))?;
        Ok(())
    }

    #[test]
    fn bad_deltas_and_overflow() -> Result<(), FlowError> {
        let mut fc = FlowControl::new();
        fc.add_stream(1)?;
        assert_eq!(
            fc.apply_window_update(&update(1, 0)),
            Err(FlowError::InvalidDelta(0))
        );
        assert_eq!(
            fc.apply_window_update(&update(1, 0x8000_0000)),
            Err(FlowError::InvalidDelta(0x8000_0000))
        );
        assert_eq!(
            fc.apply_window_update(&update(1, MAX_WINDOW)),
            Err(FlowError::WindowOverflow(1))
        );
        assert_eq!(
            fc.apply_window_update(&update(0, MAX_WINDOW - 65_535)),
            Err(FlowError::WindowOverflow(0))
        );
        fc.apply_window_update(&update(0, MAX_WINDOW - 65_536))?;
        assert_eq!(fc.session_window(), i64::from(MAX_WINDOW));
        Ok(())
    }

    #[test]
    fn initial_window_changes_move_open_streams() -> Result<(), FlowError> {
        let mut fc = FlowControl::new();
        fc.add_stream(1)?;
        fc.consume(1, 60_000)?;
        let shrink = Settings {
            clear_settings: false,
            entries: vec![Setting {
                flags: 0,
                id: setting_id::INITIAL_WINDOW_SIZE,
                value: 1024,
            }],
        };
        fc.apply_settings(&shrink)?;
        // 1024 - 60000: negative, nothing may be sent.
        assert_eq!(fc.stream_window(1), Some(1024 - 60_000));
        assert_eq!(fc.sendable(1), 0);
        fc.add_stream(3)?;
        assert_eq!(fc.stream_window(3), Some(1024));
        // The session window is not affected by SETTINGS.
        assert_eq!(fc.session_window(), 5_536);
        fc.set_initial_window(200_000)?;
        assert_eq!(fc.stream_window(3), Some(200_000));
        assert_eq!(
            fc.set_initial_window(MAX_WINDOW + 1),
            Err(FlowError::InvalidInitialWindow(MAX_WINDOW + 1))
        );
        fc.apply_settings(&Settings::default())?;
        Ok(())
    }
}
