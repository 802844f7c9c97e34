//! Frames to bytes.

use crate::compress::Deflater;
use crate::frame::{Frame, MAX_FRAME_PAYLOAD, MAX_STREAM_ID, VERSION, flag, kind};
use crate::{Error, Headers};

/// Turns [`Frame`]s into bytes for one direction of a connection.
///
/// The encoder owns the compressing half of the connection's header
/// compression: every header block it writes depends on the ones before, so
/// the bytes of all frames must reach the peer in the order they were encoded.
/// Frames are validated before anything is compressed; an invalid frame is
/// refused with an error and leaves the encoder usable.
#[derive(Default)]
pub struct Encoder {
    deflater: Deflater,
    block: Vec<u8>,
    compressed: Vec<u8>,
    poisoned: bool,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

impl Encoder {
    /// A fresh encoder (new compression context).
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the encoding of `frame` to `out`. On error nothing is appended.
    pub fn encode(&mut self, frame: &Frame, out: &mut Vec<u8>) -> Result<(), Error> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        match frame {
            Frame::SynStream(f) => {
                const F: &str = "SYN_STREAM";
                check_stream_id(F, f.stream_id, false)?;
                check_stream_id(F, f.associated_stream_id, true)?;
                if f.priority > 7 {
                    return Err(invalid(F, "priority above 7"));
                }
                let mut flags = 0;
                if f.fin {
                    flags |= flag::FIN;
                }
                if f.unidirectional {
                    flags |= flag::UNIDIRECTIONAL;
                }
                let mut fixed = [0u8; 10];
                fixed[..4].copy_from_slice(&f.stream_id.to_be_bytes());
                fixed[4..8].copy_from_slice(&f.associated_stream_id.to_be_bytes());
                fixed[8] = f.priority << 5;
                fixed[9] = f.slot;
                self.headers_frame(kind::SYN_STREAM, flags, &fixed, &f.headers, out)?;
            }
            Frame::SynReply(f) => {
                check_stream_id("SYN_REPLY", f.stream_id, false)?;
                let flags = if f.fin { flag::FIN } else { 0 };
                let fixed = f.stream_id.to_be_bytes();
                self.headers_frame(kind::SYN_REPLY, flags, &fixed, &f.headers, out)?;
            }
            Frame::Headers(f) => {
                check_stream_id("HEADERS", f.stream_id, false)?;
                let flags = if f.fin { flag::FIN } else { 0 };
                let fixed = f.stream_id.to_be_bytes();
                self.headers_frame(kind::HEADERS, flags, &fixed, &f.headers, out)?;
            }
            Frame::RstStream(f) => {
                check_stream_id("RST_STREAM", f.stream_id, false)?;
                words_frame(out, kind::RST_STREAM, &[f.stream_id, f.status.0]);
            }
            Frame::Settings(f) => {
                const F: &str = "SETTINGS";
                let len = f
                    .entries
                    .len()
                    .checked_mul(8)
                    .and_then(|n| n.checked_add(4))
                    .filter(|&n| n <= MAX_FRAME_PAYLOAD)
                    .ok_or(invalid(F, "too many entries"))?;
                if f.entries.iter().any(|s| s.id > 0x00FF_FFFF) {
                    return Err(invalid(F, "setting id does not fit in 24 bits"));
                }
                let flags = if f.clear_settings {
                    flag::CLEAR_SETTINGS
                } else {
                    0
                };
                control_header(out, kind::SETTINGS, flags, len);
                out.extend_from_slice(&(f.entries.len() as u32).to_be_bytes());
                for s in &f.entries {
                    out.extend_from_slice(&((u32::from(s.flags) << 24) | s.id).to_be_bytes());
                    out.extend_from_slice(&s.value.to_be_bytes());
                }
            }
            Frame::Ping(f) => {
                words_frame(out, kind::PING, &[f.id]);
            }
            Frame::GoAway(f) => {
                check_stream_id("GOAWAY", f.last_good_stream_id, true)?;
                words_frame(out, kind::GOAWAY, &[f.last_good_stream_id, f.status.0]);
            }
            Frame::WindowUpdate(f) => {
                const F: &str = "WINDOW_UPDATE";
                check_stream_id(F, f.stream_id, true)?;
                if f.delta == 0 || f.delta > 0x7FFF_FFFF {
                    return Err(invalid(F, "delta outside 1..=2^31-1"));
                }
                words_frame(out, kind::WINDOW_UPDATE, &[f.stream_id, f.delta]);
            }
            Frame::Data(f) => {
                check_stream_id("data", f.stream_id, false)?;
                if f.data.len() > MAX_FRAME_PAYLOAD {
                    return Err(Error::FrameTooLarge {
                        length: f.data.len(),
                        max: MAX_FRAME_PAYLOAD,
                    });
                }
                let flags = if f.fin { flag::FIN } else { 0 };
                out.extend_from_slice(&f.stream_id.to_be_bytes());
                out.extend_from_slice(
                    &((u32::from(flags) << 24) | f.data.len() as u32).to_be_bytes(),
                );
                out.extend_from_slice(&f.data);
            }
        }
        Ok(())
    }

    /// Encodes `frame` into a new buffer.
    pub fn encode_to_vec(&mut self, frame: &Frame) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        self.encode(frame, &mut out)?;
        Ok(out)
    }

    /// Writes a control frame whose payload is `fixed` followed by the
    /// compressed header block of `headers`.
    fn headers_frame(
        &mut self,
        frame_type: u16,
        flags: u8,
        fixed: &[u8],
        headers: &Headers,
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        self.block.clear();
        write_header_block(headers, &mut self.block)?;
        self.compressed.clear();
        if let Err(e) = self.deflater.compress(&self.block, &mut self.compressed) {
            self.poisoned = true;
            return Err(e);
        }
        let len = fixed.len() + self.compressed.len();
        if len > MAX_FRAME_PAYLOAD {
            // The block went into the shared context but never reaches the
            // peer: later blocks could not be inflated there.
            self.poisoned = true;
            return Err(Error::FrameTooLarge {
                length: len,
                max: MAX_FRAME_PAYLOAD,
            });
        }
        control_header(out, frame_type, flags, len);
        out.extend_from_slice(fixed);
        out.extend_from_slice(&self.compressed);
        Ok(())
    }
}

fn invalid(frame: &'static str, reason: &'static str) -> Error {
    Error::InvalidFrame { frame, reason }
}

fn check_stream_id(frame: &'static str, id: u32, zero_ok: bool) -> Result<(), Error> {
    if id > MAX_STREAM_ID {
        return Err(Error::StreamIdOutOfRange(id));
    }
    if id == 0 && !zero_ok {
        return Err(Error::ZeroStreamId { frame });
    }
    Ok(())
}

/// `len` must already be known to fit in 24 bits.
fn control_header(out: &mut Vec<u8>, frame_type: u16, flags: u8, len: usize) {
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&frame_type.to_be_bytes());
    out.extend_from_slice(&((u32::from(flags) << 24) | (len as u32 & 0x00FF_FFFF)).to_be_bytes());
}

/// Writes a flagless control frame whose payload is `words`, big-endian
/// (RST_STREAM, PING, GOAWAY, WINDOW_UPDATE).
fn words_frame(out: &mut Vec<u8>, frame_type: u16, words: &[u32]) {
    control_header(out, frame_type, 0, 4 * words.len());
    for word in words {
        out.extend_from_slice(&word.to_be_bytes());
    }
}

/// Checks that `headers` would be accepted by [`Encoder::encode`], without
/// touching any compression context (the session validates user-supplied
/// headers before queueing them for its single encoder).
#[cfg(feature = "tokio")]
pub(crate) fn validate_headers(headers: &Headers) -> Result<(), Error> {
    write_header_block(headers, &mut Vec::new())
}

/// Serialises a header block (uncompressed), validating names and values.
fn write_header_block(headers: &Headers, out: &mut Vec<u8>) -> Result<(), Error> {
    let bad = |name: &str, reason| Error::InvalidHeader {
        name: name.to_string(),
        reason,
    };
    let too_long = |name: &str| bad(name, "longer than the frame can carry");
    let len32 = |n: usize, name: &str| u32::try_from(n).map_err(|_| too_long(name));
    out.extend_from_slice(&len32(headers.len(), "")?.to_be_bytes());
    for (name, values) in headers.iter() {
        if name.is_empty() {
            return Err(bad(name, "empty name"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase())
        {
            return Err(bad(name, "name is not lower-case printable ASCII"));
        }
        if values.iter().any(|v| v.contains('\0')) {
            return Err(bad(name, "value contains NUL"));
        }
        if values.len() > 1 && values.iter().any(String::is_empty) {
            return Err(bad(name, "empty value among several"));
        }
        out.extend_from_slice(&len32(name.len(), name)?.to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        let value_len =
            values.iter().map(String::len).sum::<usize>() + values.len().saturating_sub(1);
        out.extend_from_slice(&len32(value_len, name)?.to_be_bytes());
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                out.push(0);
            }
            out.extend_from_slice(value.as_bytes());
        }
        if out.len() > MAX_FRAME_PAYLOAD * 16 {
            return Err(too_long(name));
        }
    }
    Ok(())
}
