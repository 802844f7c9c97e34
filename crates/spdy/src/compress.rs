//! The per-direction zlib contexts for header blocks.
//!
//! SPDY/3 compresses every header block of one direction of a connection with
//! a single zlib stream, primed with [`DICTIONARY`](crate::dictionary::DICTIONARY)
//! and sync-flushed at the end of each block, so a block can only be inflated
//! by a context that has seen every earlier block.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::Error;
use crate::dictionary::DICTIONARY;

/// Compressing side: one per connection, used for every outgoing header block.
pub(crate) struct Deflater {
    inner: Compress,
    primed: bool,
}

impl Default for Deflater {
    fn default() -> Self {
        Self {
            inner: Compress::new(Compression::default(), true),
            primed: false,
        }
    }
}

impl Deflater {
    /// Compresses `input` as the next header block, appending to `out`, and
    /// sync-flushes so the peer can inflate it completely.
    pub(crate) fn compress(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        if !self.primed {
            self.inner
                .set_dictionary(DICTIONARY)
                .map_err(|e| Error::Compression(e.to_string()))?;
            self.primed = true;
        }
        let start_in = self.inner.total_in();
        loop {
            let consumed = self.consumed_since(start_in);
            let rest = input.get(consumed..).unwrap_or_default();
            out.reserve(rest.len() + 64);
            let out_before = out.len();
            self.inner
                .compress_vec(rest, out, FlushCompress::Sync)
                .map_err(|e| Error::Compression(e.to_string()))?;
            let consumed_now = self.consumed_since(start_in);
            if consumed_now >= input.len() && out.len() < out.capacity() {
                return Ok(());
            }
            if consumed_now == consumed && out.len() == out_before {
                return Err(Error::Compression("compressor made no progress".into()));
            }
        }
    }

    fn consumed_since(&self, start: u64) -> usize {
        usize::try_from(self.inner.total_in() - start).unwrap_or(usize::MAX)
    }
}

/// Inflating side: one per connection, used for every incoming header block.
pub(crate) struct Inflater {
    inner: Decompress,
    primed: bool,
}

impl Default for Inflater {
    fn default() -> Self {
        Self {
            inner: Decompress::new(true),
            primed: false,
        }
    }
}

impl Inflater {
    /// Inflates the next header block, refusing to produce more than `max`
    /// bytes (a defence against decompression bombs).
    pub(crate) fn decompress(&mut self, input: &[u8], max: usize) -> Result<Vec<u8>, Error> {
        let start_in = self.inner.total_in();
        let limit = max.saturating_add(1);
        let mut out = Vec::with_capacity(limit.min(input.len().saturating_mul(4).max(256)));
        loop {
            let consumed = self.consumed_since(start_in);
            let rest = input.get(consumed..).unwrap_or_default();
            if out.len() == out.capacity() {
                let grow = out.capacity().max(256).min(limit - out.len());
                out.reserve_exact(grow);
            }
            let out_before = out.len();
            match self
                .inner
                .decompress_vec(rest, &mut out, FlushDecompress::Sync)
            {
                Ok(Status::Ok | Status::BufError) => {}
                Ok(Status::StreamEnd) => {
                    return Err(Error::Decompression(
                        "the header compression stream was ended by the peer".into(),
                    ));
                }
                Err(e) if e.needs_dictionary().is_some() && !self.primed => {
                    self.inner
                        .set_dictionary(DICTIONARY)
                        .map_err(|e| Error::Decompression(e.to_string()))?;
                    self.primed = true;
                    continue;
                }
                Err(e) => return Err(Error::Decompression(e.to_string())),
            }
            if out.len() > max {
                return Err(Error::HeaderBlockTooLarge { max });
            }
            let consumed_now = self.consumed_since(start_in);
            if consumed_now >= input.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            if consumed_now == consumed && out.len() == out_before && out.len() < out.capacity() {
                return Err(Error::Decompression("header block is truncated".into()));
            }
        }
    }

    fn consumed_since(&self, start: u64) -> usize {
        usize::try_from(self.inner.total_in() - start).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_the_spdy3_one() {
        assert_eq!(DICTIONARY.len(), 1423);
        // Adler-32 of the dictionary, as announced in every SPDY/3 zlib header.
        let (mut a, mut b) = (1u32, 0u32);
        for &byte in DICTIONARY {
            a = (a + u32::from(byte)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    #[test]
    fn blocks_share_one_context() -> Result<(), Error> {
        let mut d = Deflater::default();
        let mut i = Inflater::default();
        for block in [&b"first block"[..], b"second block", b"", b"first block"] {
            let mut c = Vec::new();
            d.compress(block, &mut c)?;
            assert_eq!(i.decompress(&c, 1024)?, block);
        }
        Ok(())
    }

    #[test]
    fn large_block_round_trips() -> Result<(), Error> {
        let block: Vec<u8> = (0..200_000u32).map(|n| (n * 7 % 251) as u8).collect();
        let mut d = Deflater::default();
        let mut c = Vec::new();
        d.compress(&block, &mut c)?;
        assert_eq!(Inflater::default().decompress(&c, 1 << 20)?, block);
        Ok(())
    }
}
