//! A sans-IO codec for SPDY/3.1 framing, the protocol Kubernetes uses for
//! `exec`, `attach` and `port-forward` streams (through moby/spdystream).
//!
//! The crate does no I/O: a [`Decoder`] is fed bytes and yields [`Frame`]s, an
//! [`Encoder`] turns frames into bytes, and [`FlowControl`] keeps the SPDY/3.1
//! send windows. Wire the three to a socket however the caller likes.
//!
//! With the `tokio` feature, [`session`] does that wiring: an async SPDY
//! session (streams as `AsyncRead`/`AsyncWrite`) that interoperates with
//! moby/spdystream as used by `kubectl` and `crictl`.
//!
//! - Frames: control frames `SYN_STREAM`, `SYN_REPLY`, `RST_STREAM`,
//!   `SETTINGS`, `PING`, `GOAWAY`, `HEADERS`, `WINDOW_UPDATE` (version 3) and
//!   data frames. Unknown control frame types are skipped.
//! - Header blocks ([`Headers`]) are compressed with zlib primed with the
//!   SPDY/3 dictionary, through **one context per direction per connection**:
//!   use one `Encoder` for everything a side sends and one `Decoder` for
//!   everything it receives, and never reorder encoded frames.
//! - The decoder bounds frame sizes and decompressed header blocks
//!   ([`Limits`]) and reports malformed input as [`Error`]s, never panics.
//!
//! # Example: a SYN_STREAM round trip
//!
//! ```
//! use crius_spdy::{Decoder, Encoder, Frame, Headers, SynStream};
//!
//! # fn main() -> Result<(), crius_spdy::Error> {
//! let mut headers = Headers::new();
//! headers.add("streamtype", "stdout");
//! let syn = Frame::SynStream(SynStream {
//!     stream_id: 1,
//!     headers,
//!     ..SynStream::default()
//! });
//!
//! let mut encoder = Encoder::new();
//! let bytes = encoder.encode_to_vec(&syn)?;
//!
//! let mut decoder = Decoder::new();
//! // Bytes may arrive in any pieces; an incomplete frame yields `None`.
//! decoder.feed(&bytes[..5]);
//! assert_eq!(decoder.next_frame()?, None);
//! decoder.feed(&bytes[5..]);
//! let frame = decoder.next_frame()?;
//! assert_eq!(frame, Some(syn));
//! if let Some(Frame::SynStream(s)) = frame {
//!     assert_eq!(s.headers.get("streamtype"), Some("stdout"));
//! }
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod compress;
mod decode;
mod dictionary;
mod encode;
mod error;
mod flow;
mod frame;
mod headers;
#[cfg(feature = "tokio")]
pub mod session;

pub use decode::{Decoder, Limits};
pub use encode::Encoder;
pub use error::{Error, FlowError};
pub use flow::{DEFAULT_INITIAL_WINDOW, FlowControl, MAX_WINDOW};
pub use frame::{
    Data, Frame, GoAway, GoAwayStatus, HeadersFrame, MAX_FRAME_PAYLOAD, MAX_STREAM_ID, Ping,
    RstStatus, RstStream, Setting, Settings, SynReply, SynStream, VERSION, WindowUpdate,
    setting_id,
};
pub use headers::Headers;
#[cfg(feature = "tokio")]
pub use session::{
    Incoming, IncomingStream, Role, Session, SessionConfig, SessionError, Stream, StreamReader,
    StreamWriter,
};

#[cfg(test)]
mod tests;
