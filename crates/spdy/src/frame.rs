//! Frame types of SPDY/3.1.

use crate::Headers;

/// The only protocol version this crate speaks (SPDY/3.1 keeps version 3 on the wire).
pub const VERSION: u16 = 3;

/// Largest payload a frame's 24-bit length field can describe.
pub const MAX_FRAME_PAYLOAD: usize = 0x00FF_FFFF;

/// Largest stream id (31 bits).
pub const MAX_STREAM_ID: u32 = 0x7FFF_FFFF;

/// Control frame type codes (SPDY/3 section 2.6).
pub(crate) mod kind {
    pub const SYN_STREAM: u16 = 1;
    pub const SYN_REPLY: u16 = 2;
    pub const RST_STREAM: u16 = 3;
    pub const SETTINGS: u16 = 4;
    pub const PING: u16 = 6;
    pub const GOAWAY: u16 = 7;
    pub const HEADERS: u16 = 8;
    pub const WINDOW_UPDATE: u16 = 9;
}

/// Flag bits.
pub(crate) mod flag {
    /// FLAG_FIN on SYN_STREAM, SYN_REPLY, HEADERS and data frames.
    pub const FIN: u8 = 0x01;
    /// FLAG_UNIDIRECTIONAL on SYN_STREAM.
    pub const UNIDIRECTIONAL: u8 = 0x02;
    /// FLAG_SETTINGS_CLEAR_SETTINGS on SETTINGS.
    pub const CLEAR_SETTINGS: u8 = 0x01;
}

/// One SPDY frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// SYN_STREAM: opens a stream.
    SynStream(SynStream),
    /// SYN_REPLY: accepts a stream.
    SynReply(SynReply),
    /// RST_STREAM: aborts a stream.
    RstStream(RstStream),
    /// SETTINGS.
    Settings(Settings),
    /// PING.
    Ping(Ping),
    /// GOAWAY: the sender accepts no new streams.
    GoAway(GoAway),
    /// HEADERS: more headers for a stream.
    Headers(HeadersFrame),
    /// WINDOW_UPDATE (stream id 0 is the session window).
    WindowUpdate(WindowUpdate),
    /// A data frame.
    Data(Data),
}

impl Frame {
    /// The stream this frame concerns; `None` for SETTINGS, PING and GOAWAY.
    /// A session WINDOW_UPDATE gives `Some(0)`.
    pub fn stream_id(&self) -> Option<u32> {
        match self {
            Frame::SynStream(f) => Some(f.stream_id),
            Frame::SynReply(f) => Some(f.stream_id),
            Frame::RstStream(f) => Some(f.stream_id),
            Frame::Headers(f) => Some(f.stream_id),
            Frame::WindowUpdate(f) => Some(f.stream_id),
            Frame::Data(f) => Some(f.stream_id),
            Frame::Settings(_) | Frame::Ping(_) | Frame::GoAway(_) => None,
        }
    }

    /// Whether the frame carries FLAG_FIN (half-closes its stream for the sender).
    pub fn is_fin(&self) -> bool {
        match self {
            Frame::SynStream(f) => f.fin,
            Frame::SynReply(f) => f.fin,
            Frame::Headers(f) => f.fin,
            Frame::Data(f) => f.fin,
            _ => false,
        }
    }
}

/// SYN_STREAM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SynStream {
    /// The new stream's id (odd from the client, even from the server; never 0).
    pub stream_id: u32,
    /// Stream this one is associated with, or 0.
    pub associated_stream_id: u32,
    /// Priority, 0 (highest) to 7.
    pub priority: u8,
    /// Credential slot (0 when unused, as always in Kubernetes).
    pub slot: u8,
    /// FLAG_FIN: the sender sends nothing more on this stream.
    pub fin: bool,
    /// FLAG_UNIDIRECTIONAL: the receiver must not send on this stream.
    pub unidirectional: bool,
    /// The stream's headers.
    pub headers: Headers,
}

/// SYN_REPLY.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SynReply {
    /// The stream being accepted.
    pub stream_id: u32,
    /// FLAG_FIN.
    pub fin: bool,
    /// Reply headers.
    pub headers: Headers,
}

/// RST_STREAM status codes (SPDY/3 section 2.4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RstStatus(pub u32);

impl RstStatus {
    /// PROTOCOL_ERROR.
    pub const PROTOCOL_ERROR: Self = Self(1);
    /// INVALID_STREAM.
    pub const INVALID_STREAM: Self = Self(2);
    /// REFUSED_STREAM.
    pub const REFUSED_STREAM: Self = Self(3);
    /// UNSUPPORTED_VERSION.
    pub const UNSUPPORTED_VERSION: Self = Self(4);
    /// CANCEL.
    pub const CANCEL: Self = Self(5);
    /// INTERNAL_ERROR.
    pub const INTERNAL_ERROR: Self = Self(6);
    /// FLOW_CONTROL_ERROR.
    pub const FLOW_CONTROL_ERROR: Self = Self(7);
    /// STREAM_IN_USE.
    pub const STREAM_IN_USE: Self = Self(8);
    /// STREAM_ALREADY_CLOSED.
    pub const STREAM_ALREADY_CLOSED: Self = Self(9);
    /// FRAME_TOO_LARGE.
    pub const FRAME_TOO_LARGE: Self = Self(11);
}

/// RST_STREAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RstStream {
    /// The stream being reset.
    pub stream_id: u32,
    /// Why.
    pub status: RstStatus,
}

/// Well-known SETTINGS ids.
pub mod setting_id {
    /// SETTINGS_UPLOAD_BANDWIDTH.
    pub const UPLOAD_BANDWIDTH: u32 = 1;
    /// SETTINGS_DOWNLOAD_BANDWIDTH.
    pub const DOWNLOAD_BANDWIDTH: u32 = 2;
    /// SETTINGS_ROUND_TRIP_TIME.
    pub const ROUND_TRIP_TIME: u32 = 3;
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub const MAX_CONCURRENT_STREAMS: u32 = 4;
    /// SETTINGS_CURRENT_CWND.
    pub const CURRENT_CWND: u32 = 5;
    /// SETTINGS_DOWNLOAD_RETRANS_RATE.
    pub const DOWNLOAD_RETRANS_RATE: u32 = 6;
    /// SETTINGS_INITIAL_WINDOW_SIZE.
    pub const INITIAL_WINDOW_SIZE: u32 = 7;
    /// SETTINGS_CLIENT_CERTIFICATE_VECTOR_SIZE.
    pub const CLIENT_CERTIFICATE_VECTOR_SIZE: u32 = 8;
}

/// One entry of a SETTINGS frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// Per-entry flags (FLAG_SETTINGS_PERSIST_VALUE = 1, FLAG_SETTINGS_PERSISTED = 2).
    pub flags: u8,
    /// The setting's id (24 bits), see [`setting_id`].
    pub id: u32,
    /// Its value.
    pub value: u32,
}

/// SETTINGS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// FLAG_SETTINGS_CLEAR_SETTINGS.
    pub clear_settings: bool,
    /// The entries.
    pub entries: Vec<Setting>,
}

impl Settings {
    /// The value of setting `id`, if present.
    pub fn get(&self, id: u32) -> Option<u32> {
        self.entries.iter().find(|s| s.id == id).map(|s| s.value)
    }
}

/// PING.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ping {
    /// Odd from the client, even from the server; echoed back unchanged.
    pub id: u32,
}

/// GOAWAY status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GoAwayStatus(pub u32);

impl GoAwayStatus {
    /// OK: a normal session teardown.
    pub const OK: Self = Self(0);
    /// PROTOCOL_ERROR.
    pub const PROTOCOL_ERROR: Self = Self(1);
    /// INTERNAL_ERROR.
    pub const INTERNAL_ERROR: Self = Self(2);
}

/// GOAWAY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoAway {
    /// The last stream id the sender accepted.
    pub last_good_stream_id: u32,
    /// Why.
    pub status: GoAwayStatus,
}

/// HEADERS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeadersFrame {
    /// The stream.
    pub stream_id: u32,
    /// FLAG_FIN.
    pub fin: bool,
    /// Additional headers.
    pub headers: Headers,
}

/// WINDOW_UPDATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowUpdate {
    /// The stream, or 0 for the session window (SPDY/3.1).
    pub stream_id: u32,
    /// Bytes added to the window (1..=2^31-1 when valid).
    pub delta: u32,
}

/// A data frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Data {
    /// The stream (never 0).
    pub stream_id: u32,
    /// FLAG_FIN: the last frame the sender sends on this stream.
    pub fin: bool,
    /// The payload (at most [`MAX_FRAME_PAYLOAD`] bytes).
    pub data: Vec<u8>,
}
