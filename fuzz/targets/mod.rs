//! The fuzz targets, one module each, and what they share: a byte reader for
//! structured inputs, outcome signatures that ignore names and numbers, temporary
//! roots on tmpfs, and tokio runtimes whose threads report panics to the engine.
//!
//! Included by `tests/fuzz.rs` and `benches/fuzz.rs` (`#[path]`), so that the
//! crates under test are dev-dependencies of crius-fuzz and their `fuzzing`
//! features never reach a normal build.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use crius_fuzz::Target;

pub mod challenge;
pub mod cni_result;
pub mod config;
pub mod cri_calls;
pub mod cri_requests;
pub mod layer;
pub mod manifest;
pub mod reference;
pub mod seeds;
pub mod spdy_frames;
pub mod spdy_session;
pub mod websocket;

/// Every target, in the order the benchmark runs them.
pub static TARGETS: &[Target] = &[
    layer::TARGET,
    reference::TARGET,
    manifest::TARGET,
    challenge::TARGET,
    cri_requests::POD_SANDBOX,
    cri_requests::CREATE_CONTAINER,
    cri_calls::TARGET,
    spdy_frames::TARGET,
    spdy_session::TARGET,
    websocket::TARGET,
    cni_result::TARGET,
    config::TARGET,
];

/// The target called `name`.
pub fn by_name(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// A number from the environment: decimal (`_` separators allowed) or `0x` hex.
pub fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim().replace('_', "");
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// The committed corpora, `fuzz/corpus/<target>/`.
pub fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

/// Where failing inputs are saved: `<target dir>/fuzz-artifacts/<target>/`.
pub fn artifacts_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("fuzz-artifacts")
}

/// Time bound of the targets that only parse.
pub const PARSE_BOUND: Duration = Duration::from_secs(5);
/// Time bound of the targets that do I/O (files, sockets, a store).
pub const IO_BOUND: Duration = Duration::from_secs(20);

/// A signature of a message with what varies between inputs taken out: quoted
/// parts, paths, numbers. Refusals that differ only in the value refused are one
/// outcome.
pub fn shape(message: &str) -> u64 {
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut escaped = false;
    let flush = |word: &mut String, words: &mut Vec<String>| {
        if word.contains('/') {
            words.push("<path>".into());
        } else if !word.is_empty() {
            words.push(std::mem::take(word));
        }
        word.clear();
    };
    for c in message.chars() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '`' | '\'' => quote = Some(c),
            c if c.is_whitespace() => flush(&mut word, &mut words),
            c if c.is_ascii_digit() => {}
            c => word.push(c),
        }
        if words.len() >= 12 {
            break;
        }
    }
    flush(&mut word, &mut words);
    crius_fuzz::rng::hash(words.join(" ").as_bytes())
}

/// A signature of an outcome given as text.
pub fn tag(parts: &[&str]) -> u64 {
    crius_fuzz::rng::hash(parts.join("|").as_bytes())
}

/// A temporary directory on tmpfs when there is one (the targets that write files
/// do it thousands of times a second), else in the system's temporary directory.
pub fn temp_root(prefix: &str) -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    let builder = tempfile::Builder::new().prefix(prefix).tempdir_in(shm);
    match builder {
        Ok(d) => d,
        Err(_) => match tempfile::Builder::new().prefix(prefix).tempdir() {
            Ok(d) => d,
            Err(e) => panic!("no temporary directory for {prefix}: {e}"),
        },
    }
}

/// A current-thread tokio runtime (time and I/O enabled) whose blocking threads
/// report their panics to the engine.
pub fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_start(crius_fuzz::panics::on_thread_start())
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("building a tokio runtime: {e}"),
    }
}

/// Reads structured values off an input, front to back; past the end every read
/// gives zero, so any input decodes to something.
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// Up to `n` bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = (start + n).min(self.data.len());
        self.pos = start + n;
        &self.data[start..end]
    }

    /// A byte string of length given by one byte.
    pub fn short_bytes(&mut self) -> &'a [u8] {
        let n = usize::from(self.u8());
        self.bytes(n)
    }

    /// The rest.
    pub fn rest(&mut self) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        self.pos = self.data.len();
        &self.data[start..]
    }
}

/// Writes what [`Reader`] reads, for making seeds.
#[derive(Default)]
pub struct Writer {
    pub out: Vec<u8>,
}

impl Writer {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.out.push(v);
        self
    }

    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }

    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.out.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.out.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn short_bytes(&mut self, v: &[u8]) -> &mut Self {
        let n = v.len().min(255);
        self.out.push(n as u8);
        self.out.extend_from_slice(&v[..n]);
        self
    }

    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.out.extend_from_slice(v);
        self
    }
}
