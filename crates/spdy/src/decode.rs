//! Bytes to frames.

use std::collections::HashSet;

use crate::compress::Inflater;
use crate::frame::{
    Data, Frame, GoAway, GoAwayStatus, HeadersFrame, MAX_FRAME_PAYLOAD, MAX_STREAM_ID, Ping,
    RstStatus, RstStream, Setting, Settings, SynReply, SynStream, VERSION, WindowUpdate, flag,
    kind,
};
use crate::{Error, Headers};

/// Size of the fixed part of every frame.
const FRAME_HEADER_LEN: usize = 8;

/// Bounds the decoder enforces on what a peer may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted frame payload (the 24-bit length field allows at most
    /// [`MAX_FRAME_PAYLOAD`], just under 16 MiB). Larger frames are a session error.
    pub max_frame_len: usize,
    /// Largest accepted header block after decompression (default 1 MiB).
    pub max_header_block: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_len: MAX_FRAME_PAYLOAD,
            max_header_block: 1 << 20,
        }
    }
}

/// Turns the bytes one peer sends into [`Frame`]s.
///
/// Feed bytes as they arrive, split anywhere, with [`Decoder::feed`]; then
/// call [`Decoder::next_frame`] until it returns `Ok(None)` (more bytes
/// needed). The decoder owns the inflating half of the connection's header
/// compression, so use exactly one per direction per connection.
///
/// Unknown control frame types are skipped, as the specification requires.
/// See [`Error`] for which errors leave the decoder usable.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
    pos: usize,
    inflater: Inflater,
    limits: Limits,
    poisoned: bool,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("buffered", &self.buffered())
            .field("limits", &self.limits)
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

impl Decoder {
    /// A decoder with the default [`Limits`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder with the given limits.
    pub fn with_limits(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.pos > 0 && (self.pos == self.buf.len() || self.pos >= self.buf.len() / 2) {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes fed but not yet consumed as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Whether an earlier session error made this decoder unusable.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// The next complete frame, or `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, Error> {
        loop {
            if self.poisoned {
                return Err(Error::Poisoned);
            }
            match self.decode_one() {
                Ok(Step::Frame(frame)) => return Ok(Some(frame)),
                Ok(Step::NeedMore) => return Ok(None),
                Ok(Step::Skipped) => {}
                Err(e) => {
                    if e.stream_id().is_none() {
                        self.poisoned = true;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Decodes the frame at the front of the buffer.
    ///
    /// One piece on purpose: the header checks (version, length limits) and the one
    /// `match` over the frame types read as the SPDY/3 frame table, each arm the
    /// layout of one frame; split, each part would need the header and the limits
    /// passed in, and the table would be spread over several functions.
    fn decode_one(&mut self) -> Result<Step, Error> {
        let avail = self.buf.get(self.pos..).unwrap_or_default();
        let Some(header) = avail.get(..FRAME_HEADER_LEN) else {
            return Ok(Step::NeedMore);
        };
        let word0 = be32(header, 0)?;
        let word1 = be32(header, 4)?;
        let flags = (word1 >> 24) as u8;
        let len = (word1 & 0x00FF_FFFF) as usize;
        let control = word0 & 0x8000_0000 != 0;
        if control {
            let version = ((word0 >> 16) & 0x7FFF) as u16;
            if version != VERSION {
                return Err(Error::UnsupportedVersion(version));
            }
        }
        if len > self.limits.max_frame_len {
            return Err(Error::FrameTooLarge {
                length: len,
                max: self.limits.max_frame_len,
            });
        }
        let Some(payload) = avail.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
            return Ok(Step::NeedMore);
        };
        self.pos += FRAME_HEADER_LEN + len;
        if !control {
            let stream_id = word0 & MAX_STREAM_ID;
            if stream_id == 0 {
                return Err(Error::ZeroStreamId { frame: "data" });
            }
            return Ok(Step::Frame(Frame::Data(Data {
                stream_id,
                fin: flags & flag::FIN != 0,
                data: payload.to_vec(),
            })));
        }
        let inflate = |inflater: &mut Inflater, block: &[u8]| -> Result<Vec<u8>, Error> {
            if block.is_empty() {
                return Ok(Vec::new());
            }
            inflater.decompress(block, self.limits.max_header_block)
        };
        let frame_type = (word0 & 0xFFFF) as u16;
        let frame = match frame_type {
            kind::SYN_STREAM => {
                const F: &str = "SYN_STREAM";
                if len < 10 {
                    return Err(invalid(F, "shorter than 10 bytes"));
                }
                let stream_id = be32(payload, 0)? & MAX_STREAM_ID;
                let associated_stream_id = be32(payload, 4)? & MAX_STREAM_ID;
                let priority = payload.get(8).copied().unwrap_or_default() >> 5;
                let slot = payload.get(9).copied().unwrap_or_default();
                let block = inflate(&mut self.inflater, payload.get(10..).unwrap_or_default())?;
                if stream_id == 0 {
                    return Err(Error::ZeroStreamId { frame: F });
                }
                Frame::SynStream(SynStream {
                    stream_id,
                    associated_stream_id,
                    priority,
                    slot,
                    fin: flags & flag::FIN != 0,
                    unidirectional: flags & flag::UNIDIRECTIONAL != 0,
                    headers: parse_header_block(&block, stream_id)?,
                })
            }
            kind::SYN_REPLY | kind::HEADERS => {
                let f = if frame_type == kind::SYN_REPLY {
                    "SYN_REPLY"
                } else {
                    "HEADERS"
                };
                if len < 4 {
                    return Err(invalid(f, "shorter than 4 bytes"));
                }
                let stream_id = be32(payload, 0)? & MAX_STREAM_ID;
                let block = inflate(&mut self.inflater, payload.get(4..).unwrap_or_default())?;
                if stream_id == 0 {
                    return Err(Error::ZeroStreamId { frame: f });
                }
                let headers = parse_header_block(&block, stream_id)?;
                let fin = flags & flag::FIN != 0;
                if frame_type == kind::SYN_REPLY {
                    Frame::SynReply(SynReply {
                        stream_id,
                        fin,
                        headers,
                    })
                } else {
                    Frame::Headers(HeadersFrame {
                        stream_id,
                        fin,
                        headers,
                    })
                }
            }
            kind::RST_STREAM => {
                const F: &str = "RST_STREAM";
                if len != 8 {
                    return Err(invalid(F, "length is not 8"));
                }
                let stream_id = be32(payload, 0)? & MAX_STREAM_ID;
                if stream_id == 0 {
                    return Err(Error::ZeroStreamId { frame: F });
                }
                Frame::RstStream(RstStream {
                    stream_id,
                    status: RstStatus(be32(payload, 4)?),
                })
            }
            kind::SETTINGS => {
                const F: &str = "SETTINGS";
                if len < 4 {
                    return Err(invalid(F, "shorter than 4 bytes"));
                }
                let count = be32(payload, 0)? as usize;
                if count.checked_mul(8).and_then(|n| n.checked_add(4)) != Some(len) {
                    return Err(invalid(F, "length does not match the entry count"));
                }
                let mut entries = Vec::with_capacity(count);
                for i in 0..count {
                    let flags_id = be32(payload, 4 + 8 * i)?;
                    entries.push(Setting {
                        flags: (flags_id >> 24) as u8,
                        id: flags_id & 0x00FF_FFFF,
                        value: be32(payload, 8 + 8 * i)?,
                    });
                }
                Frame::Settings(Settings {
                    clear_settings: flags & flag::CLEAR_SETTINGS != 0,
                    entries,
                })
            }
            kind::PING => {
                if len != 4 {
                    return Err(invalid("PING", "length is not 4"));
                }
                Frame::Ping(Ping {
                    id: be32(payload, 0)?,
                })
            }
            kind::GOAWAY => {
                if len != 8 {
                    return Err(invalid("GOAWAY", "length is not 8"));
                }
                Frame::GoAway(GoAway {
                    last_good_stream_id: be32(payload, 0)? & MAX_STREAM_ID,
                    status: GoAwayStatus(be32(payload, 4)?),
                })
            }
            kind::WINDOW_UPDATE => {
                if len != 8 {
                    return Err(invalid("WINDOW_UPDATE", "length is not 8"));
                }
                Frame::WindowUpdate(WindowUpdate {
                    stream_id: be32(payload, 0)? & MAX_STREAM_ID,
                    delta: be32(payload, 4)? & 0x7FFF_FFFF,
                })
            }
            _ => return Ok(Step::Skipped),
        };
        Ok(Step::Frame(frame))
    }
}

enum Step {
    Frame(Frame),
    NeedMore,
    Skipped,
}

fn invalid(frame: &'static str, reason: &'static str) -> Error {
    Error::InvalidFrame { frame, reason }
}

/// Reads a big-endian u32 at `at`; callers check lengths first, so a short
/// slice is reported as a truncated frame rather than a panic.
fn be32(bytes: &[u8], at: usize) -> Result<u32, Error> {
    bytes
        .get(at..at + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .ok_or(Error::InvalidFrame {
            frame: "control",
            reason: "truncated",
        })
}

/// Parses a decompressed name/value header block (SPDY/3 section 2.6.10).
fn parse_header_block(block: &[u8], stream_id: u32) -> Result<Headers, Error> {
    let bad = |reason| Error::InvalidHeaderBlock { stream_id, reason };
    let mut headers = Headers::new();
    if block.is_empty() {
        return Ok(headers);
    }
    let mut at = 0usize;
    let take_len = |at: &mut usize| -> Result<usize, Error> {
        let n = be32(block, *at).map_err(|_| bad("truncated"))? as usize;
        *at += 4;
        Ok(n)
    };
    let count = take_len(&mut at)?;
    // Every entry takes at least 8 bytes, which bounds allocations by the block size.
    if count > (block.len() - at) / 8 {
        return Err(bad("header count exceeds the block"));
    }
    let mut seen = HashSet::with_capacity(count);
    for _ in 0..count {
        let name_len = take_len(&mut at)?;
        let name = block
            .get(at..at.saturating_add(name_len))
            .ok_or_else(|| bad("truncated"))?;
        at += name_len;
        let value_len = take_len(&mut at)?;
        let value = block
            .get(at..at.saturating_add(value_len))
            .ok_or_else(|| bad("truncated"))?;
        at += value_len;

        if name.is_empty() {
            return Err(bad("empty header name"));
        }
        if !name
            .iter()
            .all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase())
        {
            return Err(bad("header name is not lower-case ASCII"));
        }
        let name = String::from_utf8_lossy(name).into_owned();
        if !seen.insert(name.clone()) {
            return Err(bad("duplicate header name"));
        }
        let values = if value.is_empty() {
            vec![String::new()]
        } else {
            value
                .split(|&b| b == 0)
                .map(|part| {
                    if part.is_empty() {
                        return Err(bad("empty value in a NUL-separated list"));
                    }
                    String::from_utf8(part.to_vec()).map_err(|_| bad("header value is not UTF-8"))
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        headers.push_decoded(name, values);
    }
    if at != block.len() {
        return Err(bad("trailing bytes after the last header"));
    }
    Ok(headers)
}
