//! Byte-level mutations of an input: the generic half of every target's mutation
//! step (a target may add its own, structure-aware half; see
//! [`Harness::mutate`](crate::Harness::mutate)).
//!
//! A mutation is one of: flip a bit, set a byte, write an "interesting" integer
//! (boundaries such as 0, -1, 0x7f, 0x8000 in both byte orders), add a small delta,
//! rewrite a run of ASCII digits as a boundary number, delete, insert or duplicate a
//! range, insert or overwrite with a dictionary token, splice in a piece of another
//! corpus entry, or truncate. Several are stacked per input.

use crate::rng::Rng;

const INTERESTING_8: &[u8] = &[0, 1, 0x7f, 0x80, 0xff, 16, 32, 64, 100, b'/', b'.', 0x0a];
const INTERESTING_16: &[u16] = &[0, 0x7fff, 0x8000, 0xffff, 255, 256, 512, 1000, 1024, 4096];
const INTERESTING_32: &[u32] = &[
    0,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    65535,
    65536,
    0x00ff_ffff,
    0x0100_0000,
];
/// Numbers written over a run of ASCII digits.
const NUMBERS: &[&[u8]] = &[
    b"0",
    b"1",
    b"-1",
    b"255",
    b"256",
    b"65535",
    b"65536",
    b"2147483647",
    b"2147483648",
    b"4294967296",
    b"9223372036854775807",
    b"9223372036854775808",
    b"18446744073709551615",
    b"18446744073709551616",
    b"99999999999999999999999999",
    b"1e999",
    b"-0",
    b"0x10",
];

/// What a mutation may draw from besides the input itself.
#[derive(Debug, Clone, Copy)]
pub struct Sources<'a> {
    /// Tokens of the target's format (keywords, separators, magic numbers).
    pub dictionary: &'a [&'a [u8]],
    /// Another corpus entry, for splicing.
    pub other: Option<&'a [u8]>,
    /// Longest input the target wants.
    pub max_len: usize,
}

/// Applies between one and eight stacked byte mutations to `data`.
pub fn mutate(data: &mut Vec<u8>, rng: &mut Rng, src: Sources<'_>) {
    for _ in 0..rng.small(8) {
        mutate_once(data, rng, src);
    }
    data.truncate(src.max_len);
}

/// A range `start..end` of `len` bytes, at most `max` long, biased to short ones.
fn range(rng: &mut Rng, len: usize, max: usize) -> (usize, usize) {
    if len == 0 {
        return (0, 0);
    }
    let start = rng.below(len);
    let room = (len - start).min(max);
    let n = if rng.one_in(4) {
        1 + rng.below(room)
    } else {
        1 + rng.below(room.min(8))
    };
    (start, start + n)
}

fn mutate_once(data: &mut Vec<u8>, rng: &mut Rng, src: Sources<'_>) {
    let len = data.len();
    match rng.below(15) {
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] = rng.byte();
        }
        2 if len > 0 => {
            let i = rng.below(len);
            if let Some(&v) = rng.pick(INTERESTING_8) {
                data[i] = v;
            }
        }
        3 if len >= 2 => {
            let i = rng.below(len - 1);
            let v = rng.pick(INTERESTING_16).copied().unwrap_or(0);
            let b = if rng.one_in(2) {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            };
            data[i..i + 2].copy_from_slice(&b);
        }
        4 if len >= 4 => {
            let i = rng.below(len - 3);
            let v = rng.pick(INTERESTING_32).copied().unwrap_or(0);
            let b = if rng.one_in(2) {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            };
            data[i..i + 4].copy_from_slice(&b);
        }
        5 if len > 0 => {
            let i = rng.below(len);
            let delta = 1 + rng.below(16) as u8;
            data[i] = if rng.one_in(2) {
                data[i].wrapping_add(delta)
            } else {
                data[i].wrapping_sub(delta)
            };
        }
        6 => digits(data, rng),
        7 if len > 0 => {
            let (a, b) = range(rng, len, len);
            data.drain(a..b);
        }
        8 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
            data.splice(at..at, bytes);
        }
        9 if len > 0 => {
            let (a, b) = range(rng, len, 256);
            let piece = data[a..b].to_vec();
            let at = rng.below(len + 1);
            data.splice(at..at, piece);
        }
        10 | 11 => {
            let Some(tok) = rng.pick(src.dictionary) else {
                return;
            };
            let at = rng.below(len + 1);
            if rng.one_in(2) || at == len {
                data.splice(at..at, tok.iter().copied());
            } else {
                let end = (at + tok.len()).min(len);
                data[at..end].copy_from_slice(&tok[..end - at]);
            }
        }
        12 | 13 => {
            let Some(other) = src.other.filter(|o| !o.is_empty()) else {
                return;
            };
            let (a, b) = range(rng, other.len(), 1024);
            let at = rng.below(len + 1);
            if rng.one_in(2) {
                data.splice(at..at, other[a..b].iter().copied());
            } else {
                // Keep our head, take the other's tail: a classic crossover.
                data.truncate(at);
                data.extend_from_slice(&other[a..]);
            }
        }
        14 if len > 0 => {
            let at = rng.below(len);
            data.truncate(at);
        }
        _ => {
            let at = rng.below(len + 1);
            data.insert(at, rng.byte());
        }
    }
}

/// Rewrites a run of ASCII digits (a length, a port, a size in a text format) as a
/// boundary number.
fn digits(data: &mut Vec<u8>, rng: &mut Rng) {
    let runs: Vec<usize> = data
        .iter()
        .enumerate()
        .filter(|&(i, b)| b.is_ascii_digit() && (i == 0 || !data[i - 1].is_ascii_digit()))
        .map(|(i, _)| i)
        .collect();
    let Some(&start) = rng.pick(&runs) else {
        return;
    };
    let end = data[start..]
        .iter()
        .position(|b| !b.is_ascii_digit())
        .map_or(data.len(), |n| start + n);
    if let Some(num) = rng.pick(NUMBERS) {
        data.splice(start..end, num.iter().copied());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_are_deterministic_and_bounded() {
        let src = Sources {
            dictionary: &[b"TOKEN"],
            other: Some(b"another input"),
            max_len: 64,
        };
        let run = |seed| {
            let mut rng = Rng::new(seed);
            let mut out = Vec::new();
            for _ in 0..200 {
                let mut d = b"{\"port\": 8080, \"name\": \"x\"}".to_vec();
                mutate(&mut d, &mut rng, src);
                assert!(d.len() <= 64);
                out.push(d);
            }
            out
        };
        let a = run(3);
        assert_eq!(a, run(3));
        assert_ne!(a, run(4));
        // The mutations do change inputs, and reach the dictionary and numbers.
        let original = b"{\"port\": 8080, \"name\": \"x\"}".to_vec();
        assert!(a.iter().filter(|d| **d != original).count() > 150);
        assert!(a.iter().any(|d| d.windows(5).any(|w| w == b"TOKEN")));
        assert!(a.iter().any(|d| !d.windows(4).any(|w| w == b"8080")));
    }

    #[test]
    fn empty_inputs_grow() {
        let mut rng = Rng::new(9);
        let src = Sources {
            dictionary: &[],
            other: None,
            max_len: 16,
        };
        let grown = (0..100).any(|_| {
            let mut d = Vec::new();
            mutate(&mut d, &mut rng, src);
            !d.is_empty()
        });
        assert!(grown);
    }
}
