//! Errors of the codec and of flow-control bookkeeping.

/// What went wrong while decoding or encoding a frame.
///
/// Decoding errors come in two kinds, told apart by [`Error::stream_id`]:
///
/// - **stream errors** (`Some(id)`): the frame was well framed and its header
///   block decompressed, but its content is invalid for that stream (for
///   example an upper-case header name). The decoder stays usable; the caller
///   should answer with `RST_STREAM` (`PROTOCOL_ERROR`) for that stream.
/// - **session errors** (`None`): the byte stream or the shared compression
///   context can no longer be trusted. The decoder is poisoned and every later
///   call returns [`Error::Poisoned`]; the caller should send `GOAWAY` and
///   close the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A control frame carried a version other than 3.
    #[error("unsupported SPDY version {0} (only 3 is supported)")]
    UnsupportedVersion(u16),

    /// A frame's length field exceeds the configured maximum.
    #[error("frame length {length} exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The length announced by the frame.
        length: usize,
        /// The configured limit.
        max: usize,
    },

    /// A control frame whose fixed layout is wrong (length, flags, fields).
    #[error("invalid {frame} frame: {reason}")]
    InvalidFrame {
        /// Name of the frame type, e.g. `"PING"`.
        frame: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A frame that must name a stream carried stream id 0.
    #[error("{frame} frame with stream id 0")]
    ZeroStreamId {
        /// Name of the frame type.
        frame: &'static str,
    },

    /// A stream id does not fit in 31 bits (encoding only).
    #[error("stream id {0:#x} does not fit in 31 bits")]
    StreamIdOutOfRange(u32),

    /// The zlib stream of header blocks is corrupt.
    #[error("header block decompression failed: {0}")]
    Decompression(String),

    /// A header block decompressed to more than the configured maximum.
    #[error("decompressed header block exceeds the limit of {max} bytes")]
    HeaderBlockTooLarge {
        /// The configured limit.
        max: usize,
    },

    /// A decompressed header block is malformed for the given stream.
    #[error("invalid header block on stream {stream_id}: {reason}")]
    InvalidHeaderBlock {
        /// The stream the block belongs to.
        stream_id: u32,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A header name or value cannot be encoded (encoding only).
    #[error("invalid header {name:?}: {reason}")]
    InvalidHeader {
        /// The offending header name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// Header compression failed (encoding only).
    #[error("header block compression failed: {0}")]
    Compression(String),

    /// A previous session error left the codec unusable.
    #[error("codec unusable after an earlier session error")]
    Poisoned,
}

impl Error {
    /// The stream a *stream error* concerns, or `None` for a session error.
    ///
    /// See the type-level documentation for what each kind means to the caller.
    pub fn stream_id(&self) -> Option<u32> {
        match self {
            Error::InvalidHeaderBlock { stream_id, .. } => Some(*stream_id),
            _ => None,
        }
    }
}

/// Violations of SPDY/3.1 flow control found by [`crate::FlowControl`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlowError {
    /// The stream is not known to the flow controller.
    #[error("unknown stream {0}")]
    UnknownStream(u32),

    /// The stream is already tracked.
    #[error("stream {0} is already tracked")]
    DuplicateStream(u32),

    /// A WINDOW_UPDATE delta outside 1..=2^31-1.
    #[error("invalid window delta {0}")]
    InvalidDelta(u32),

    /// A window would grow beyond 2^31-1 (stream id 0 means the session).
    #[error("window of stream {0} would exceed 2^31-1")]
    WindowOverflow(u32),

    /// An attempt to send more than the window allows.
    #[error(
        "sending {requested} bytes on stream {stream_id} exceeds the window ({available} available)"
    )]
    WindowExceeded {
        /// The stream.
        stream_id: u32,
        /// Bytes the caller wanted to send.
        requested: usize,
        /// Bytes that may be sent.
        available: usize,
    },

    /// An initial window size outside 0..=2^31-1.
    #[error("invalid initial window size {0}")]
    InvalidInitialWindow(u32),
}
