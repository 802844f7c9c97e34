//! Frame types of SPDY/3.1.

use crate::Headers;

/// Status codes as constants of a `u32` newtype, each named as in the
/// specification.
macro_rules! codes {
    ($ty:ident { $($name:ident = $value:literal,)* }) => {
        impl $ty {
            $(
                #[doc = concat!("`", stringify!($name), "`.")]
                pub const $name: Self = Self($value);
            )*
        }
    };
}

/// SETTINGS ids as `u32` constants; `X` is `SETTINGS_X` in the specification.
macro_rules! ids {
    ($($name:ident = $value:literal,)*) => {
        $(
            #[doc = concat!("`SETTINGS_", stringify!($name), "`.")]
            pub const $name: u32 = $value;
        )*
    };
}

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

codes! {
    RstStatus {
        PROTOCOL_ERROR = 1, INVALID_STREAM = 2, REFUSED_STREAM = 3, UNSUPPORTED_VERSION = 4,
        CANCEL = 5, INTERNAL_ERROR = 6, FLOW_CONTROL_ERROR = 7, STREAM_IN_USE = 8,
        STREAM_ALREADY_CLOSED = 9, FRAME_TOO_LARGE = 11,
    }
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
    ids! {
        UPLOAD_BANDWIDTH = 1, DOWNLOAD_BANDWIDTH = 2, ROUND_TRIP_TIME = 3,
        MAX_CONCURRENT_STREAMS = 4, CURRENT_CWND = 5, DOWNLOAD_RETRANS_RATE = 6,
        INITIAL_WINDOW_SIZE = 7, CLIENT_CERTIFICATE_VECTOR_SIZE = 8,
    }
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

/// GOAWAY status codes (`OK` is a normal session teardown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GoAwayStatus(pub u32);

codes! {
    GoAwayStatus {
        OK = 0, PROTOCOL_ERROR = 1, INTERNAL_ERROR = 2,
    }
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
