//! The CRI container log format, written by the shim itself.
//!
//! Each record is one line: `<RFC3339Nano UTC timestamp> <stdout|stderr> <P|F> <message>\n`.
//! A line of output becomes one `F` (full) record. A line longer than [`MAX_LINE`] bytes
//! is split: [`MAX_LINE`]-byte `P` (partial) records, then the rest as `F`. Output that
//! ends without a newline (the stream closed mid-line) is written as a final `P` record,
//! as CRI-O's conmon does: the kubelet then reproduces exactly the bytes that were
//! written, with no newline invented. (containerd writes `F` here; both parse.)
//!
//! The kubelet's parser (`pkg/kubelet/kuberuntime/logs`) splits on the first three spaces;
//! the timestamp must parse as Go's RFC3339Nano, which accepts the fixed nine fraction
//! digits written here.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest message in one record; longer lines are split into `P` records.
pub const MAX_LINE: usize = 16 * 1024;

/// Formats a time as RFC3339 with nanoseconds in UTC, e.g. `2026-11-22T23:47:02.123456789Z`.
pub fn rfc3339_nano(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

/// Which stream a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The process's standard output.
    Stdout,
    /// The process's standard error.
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One parsed CRI log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// The timestamp, as written.
    pub timestamp: &'a str,
    /// `stdout` or `stderr`.
    pub stream: Stream,
    /// True for a `P` (partial) record.
    pub partial: bool,
    /// The message bytes (no trailing newline).
    pub message: &'a [u8],
}

/// Parses one record (without its trailing newline) the way the kubelet does, and
/// checks the timestamp's shape (`YYYY-MM-DDTHH:MM:SS[.fraction]Z`).
pub fn parse_record(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let ts = std::str::from_utf8(parts.next()?).ok()?;
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match parts.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    let message = parts.next()?;
    let b = ts.as_bytes();
    let shape_ok = b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b.last() == Some(&b'Z')
        && b[..19]
            .iter()
            .enumerate()
            .all(|(i, c)| matches!(i, 4 | 7 | 10 | 13 | 16) || c.is_ascii_digit())
        && (b.len() == 20 || (b[19] == b'.' && b[20..b.len() - 1].iter().all(u8::is_ascii_digit)));
    shape_ok.then_some(Record {
        timestamp: ts,
        stream,
        partial,
        message,
    })
}

/// A CRI log file shared by a container's stdout and stderr copiers; reopenable.
pub(crate) struct CriLog {
    path: PathBuf,
    file: Mutex<File>,
}

fn open_log(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

impl CriLog {
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        Ok(CriLog {
            path: path.to_owned(),
            file: Mutex::new(open_log(path)?),
        })
    }

    /// Opens the path again (after the kubelet renamed the old file away).
    pub(crate) fn reopen(&self) -> io::Result<()> {
        let new = open_log(&self.path)?;
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        *f = new;
        Ok(())
    }

    fn record(&self, stream: Stream, partial: bool, msg: &[u8]) -> io::Result<()> {
        let ts = rfc3339_nano(SystemTime::now());
        let mut line = Vec::with_capacity(ts.len() + msg.len() + 12);
        line.extend_from_slice(ts.as_bytes());
        line.push(b' ');
        line.extend_from_slice(stream.as_str().as_bytes());
        line.extend_from_slice(if partial { b" P " } else { b" F " });
        line.extend_from_slice(msg);
        line.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(&line)
    }

    /// Copies `src` into the log as `stream` until EOF. Returns when the last writer
    /// of the pipe has closed it. Every chunk read is also given, as read, to `each`
    /// (before it is logged: the attachers of the stream).
    pub(crate) fn copy_from(
        &self,
        mut src: impl Read,
        stream: Stream,
        mut each: impl FnMut(&[u8]),
    ) {
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = match src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            each(&buf[..n]);
            pending.extend_from_slice(&buf[..n]);
            self.emit_complete(&mut pending, stream);
            if pending.is_empty() && pending.capacity() > 2 * MAX_LINE {
                pending = Vec::new();
            }
        }
        if !pending.is_empty() {
            // The stream ended mid-line: keep the bytes, mark them partial.
            let _ = self.record(stream, true, &pending);
        }
    }

    /// Writes every complete line (and every full MAX_LINE chunk) of `pending`,
    /// leaving only an incomplete tail shorter than MAX_LINE.
    fn emit_complete(&self, pending: &mut Vec<u8>, stream: Stream) {
        let mut start = 0;
        loop {
            let rest = &pending[start..];
            match rest.iter().position(|b| *b == b'\n') {
                Some(pos) if pos <= MAX_LINE => {
                    let _ = self.record(stream, false, &rest[..pos]);
                    start += pos + 1;
                }
                _ if rest.len() > MAX_LINE => {
                    let _ = self.record(stream, true, &rest[..MAX_LINE]);
                    start += MAX_LINE;
                }
                _ => break,
            }
        }
        pending.drain(..start);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn formats_known_times() {
        let t = UNIX_EPOCH + std::time::Duration::new(0, 5);
        assert_eq!(rfc3339_nano(t), "1970-01-01T00:00:00.000000005Z");
        let t = UNIX_EPOCH + std::time::Duration::new(951_782_400, 0); // 2000-02-29
        assert_eq!(rfc3339_nano(t), "2000-02-29T00:00:00.000000000Z");
        let t = UNIX_EPOCH + std::time::Duration::new(1_795_393_622, 1);
        assert_eq!(rfc3339_nano(t), "2026-11-23T00:27:02.000000001Z");
    }

    fn run(input: &[u8]) -> Vec<(bool, Vec<u8>)> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let log = CriLog::open(&p).unwrap();
        let mut seen = Vec::new();
        log.copy_from(input, Stream::Stdout, |c| seen.extend_from_slice(c));
        assert_eq!(seen, input);
        let text = std::fs::read(&p).unwrap();
        text.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let r = parse_record(l).unwrap();
                assert_eq!(r.stream, Stream::Stdout);
                (r.partial, r.message.to_vec())
            })
            .collect()
    }

    #[test]
    fn splits_lines() {
        assert_eq!(
            run(b"a\n\nb c\nend"),
            vec![
                (false, b"a".to_vec()),
                (false, b"".to_vec()),
                (false, b"b c".to_vec()),
                (true, b"end".to_vec())
            ]
        );
        let long = vec![b'x'; MAX_LINE * 2 + 5];
        let mut input = long.clone();
        input.push(b'\n');
        let recs = run(&input);
        assert_eq!(recs.len(), 3);
        assert!(recs[0].0 && recs[1].0 && !recs[2].0);
        assert_eq!(recs[2].1.len(), 5);
        let exact = [vec![b'y'; MAX_LINE], b"\n".to_vec()].concat();
        assert_eq!(run(&exact), vec![(false, vec![b'y'; MAX_LINE])]);
    }
}
