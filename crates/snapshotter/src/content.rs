//! The content store: blobs by digest, written to a temporary file and made visible under
//! their digest only once size and digest are verified.
//!
//! Layout under the root:
//! - `blobs/sha256/<hex>` — committed blobs; a file here always hashes to its name (it is
//!   renamed into place only after verification and fsync).
//! - `ingest/<pid>-<n>-<nanos>` — blobs being written. [`ContentStore::open`] removes the
//!   ones whose process is gone (a crash mid-download).
//!
//! Invariants: nothing under `blobs/` is ever written in place; writers of the same digest
//! may race freely (the second rename replaces identical bytes, or sees the blob and
//! discards its own copy).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::util;
use crate::{Digest, Usage};

/// Blobs by digest under `<root>/blobs/sha256/<hex>`.
#[derive(Debug, Clone)]
pub struct ContentStore {
    root: PathBuf,
    blobs: PathBuf,
    ingest: PathBuf,
}

impl ContentStore {
    /// Opens (creating if needed) a store at `root`, removing temporary files left by a
    /// process that no longer runs.
    pub fn open(root: &Path) -> Result<ContentStore> {
        let blobs = root.join("blobs").join("sha256");
        let ingest = root.join("ingest");
        util::create_dir_all(&blobs)?;
        util::create_dir_all(&ingest)?;
        util::clean_stale(&ingest)?;
        Ok(ContentStore {
            root: root.to_path_buf(),
            blobs,
            ingest,
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether a verified blob with this digest is present.
    pub fn has(&self, d: &Digest) -> bool {
        self.path(d).is_file()
    }

    /// The size of a committed blob.
    pub fn size(&self, d: &Digest) -> Option<u64> {
        fs::metadata(self.path(d)).ok().map(|m| m.len())
    }

    /// Where a committed blob lives (it may not exist). Open it read-only.
    pub fn path(&self, d: &Digest) -> PathBuf {
        self.blobs.join(d.hex())
    }

    /// Reads a whole (small) blob and verifies its digest.
    pub fn read(&self, d: &Digest) -> Result<Vec<u8>> {
        let p = self.path(d);
        let bytes = match fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotFound {
                    what: format!("blob {d}"),
                });
            }
            Err(e) => return Err(Error::io_path("read blob", &p, e)),
        };
        let actual = Digest::sha256_of(&bytes);
        if &actual != d {
            return Err(Error::DigestMismatch {
                expected: d.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Opens a committed blob for streaming reads (not verified; use [`ContentStore::read`]
    /// for small blobs).
    pub fn open_blob(&self, d: &Digest) -> Result<File> {
        let p = self.path(d);
        File::open(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::NotFound {
                    what: format!("blob {d}"),
                }
            } else {
                Error::io_path("open blob", &p, e)
            }
        })
    }

    /// Starts writing a blob expected to hash to `expected` (and, if given, to be
    /// `expected_size` bytes long).
    pub fn writer(&self, expected: &Digest, expected_size: Option<u64>) -> Result<BlobWriter> {
        let tmp = self.ingest.join(util::temp_name());
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io_path("create ingest file", &tmp, e))?;
        Ok(BlobWriter {
            file: Some(file),
            tmp,
            dest: self.path(expected),
            blobs: self.blobs.clone(),
            expected: expected.clone(),
            expected_size,
            hasher: Sha256::new(),
            written: 0,
        })
    }

    /// Writes a whole blob from a reader, verifying it. Returns the bytes written.
    pub fn ingest(
        &self,
        expected: &Digest,
        expected_size: Option<u64>,
        mut reader: impl Read,
    ) -> Result<u64> {
        let mut w = self.writer(expected, expected_size)?;
        io::copy(&mut reader, &mut w)
            .map_err(|e| Error::io(format!("write blob {expected}"), e))?;
        let n = w.written();
        w.commit()?;
        Ok(n)
    }

    /// Deletes a blob; a missing blob is fine.
    pub fn delete(&self, d: &Digest) -> Result<()> {
        let p = self.path(d);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io_path("delete blob", &p, e)),
        }
    }

    /// Garbage collection: deletes every blob whose digest is not in `keep` and returns the
    /// digests deleted. The caller passes every digest it still references, including those
    /// of pulls in progress.
    pub fn prune(&self, keep: &std::collections::HashSet<Digest>) -> Result<Vec<Digest>> {
        let mut removed = Vec::new();
        for (d, _) in self.list()? {
            if !keep.contains(&d) {
                self.delete(&d)?;
                removed.push(d);
            }
        }
        Ok(removed)
    }

    /// Every committed blob and its size, sorted by digest.
    pub fn list(&self) -> Result<Vec<(Digest, u64)>> {
        let mut out = Vec::new();
        for ent in util::read_dir(&self.blobs, "list")? {
            let ent = ent?;
            let name = ent.file_name();
            let Ok(d) = Digest::parse(&format!("sha256:{}", name.to_string_lossy())) else {
                continue;
            };
            match ent.metadata() {
                Ok(m) if m.is_file() => out.push((d, m.len())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io_path("stat", &ent.path(), e)),
            }
        }
        out.sort();
        Ok(out)
    }

    /// Bytes and inodes the store uses on disk (blobs plus in-flight ingests).
    pub fn disk_usage(&self) -> Result<Usage> {
        util::disk_usage(&self.root)
    }
}

/// A blob being written: hashes as it writes into a temporary file in `ingest/`.
///
/// [`BlobWriter::commit`] verifies and publishes it; dropping it without committing
/// removes the temporary file.
#[derive(Debug)]
pub struct BlobWriter {
    file: Option<File>,
    tmp: PathBuf,
    dest: PathBuf,
    blobs: PathBuf,
    expected: Digest,
    expected_size: Option<u64>,
    hasher: Sha256,
    written: u64,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The digest this writer expects.
    pub fn expected(&self) -> &Digest {
        &self.expected
    }

    /// Verifies size and digest, fsyncs, and atomically renames the blob into place. If the
    /// blob is already present (a concurrent writer won), ours is discarded and this is Ok.
    /// On any error the temporary file is removed.
    pub fn commit(mut self) -> Result<()> {
        let Some(file) = self.file.take() else {
            return Err(Error::io(
                "commit blob",
                io::Error::other("writer already closed"),
            ));
        };
        if let Some(exp) = self.expected_size {
            if exp != self.written {
                return Err(Error::SizeMismatch {
                    digest: self.expected.clone(),
                    expected: exp,
                    actual: self.written,
                });
            }
        }
        let actual = Digest::from_hasher(std::mem::take(&mut self.hasher));
        if actual != self.expected {
            return Err(Error::DigestMismatch {
                expected: self.expected.clone(),
                actual,
            });
        }
        if self.dest.is_file() {
            return Ok(()); // Drop removes our temporary copy.
        }
        file.sync_all()
            .map_err(|e| Error::io_path("fsync", &self.tmp, e))?;
        drop(file);
        fs::rename(&self.tmp, &self.dest)
            .map_err(|e| Error::io_path("rename blob into", &self.dest, e))?;
        util::fsync_dir(&self.blobs)
    }
}

impl BlobWriter {
    /// A reader that passes `reader` through and writes every byte it yields into this
    /// blob: unpack a layer while it downloads with
    /// `extraction.unpack(writer.tee(body), compression)`, then `io::copy` the tee into
    /// `io::sink()` (to catch any trailing bytes the decompressor did not need) and commit.
    pub fn tee<R: Read>(&mut self, reader: R) -> Tee<'_, R> {
        Tee {
            inner: reader,
            writer: self,
        }
    }
}

/// See [`BlobWriter::tee`].
#[derive(Debug)]
pub struct Tee<'a, R> {
    inner: R,
    writer: &'a mut BlobWriter,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.writer.write_all(&buf[..n])?;
        Ok(n)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(f) = self.file.as_mut() else {
            return Err(io::Error::other("blob writer already closed"));
        };
        let n = f.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        if let Some(exp) = self.expected_size {
            if self.written > exp {
                return Err(io::Error::other(format!(
                    "blob {} is larger than its expected size {exp}",
                    self.expected
                )));
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        self.file.take();
        // After a successful rename the temporary name no longer exists: NotFound is fine.
        if let Err(e) = fs::remove_file(&self.tmp) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.tmp.display(), error = %e, "removing ingest file");
            }
        }
    }
}
