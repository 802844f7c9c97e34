//! NRI's connection multiplexer: several logical connections over one unix socket
//! (the trunk), so that both ends can run a ttrpc server and a ttrpc client on it.
//!
//! On the trunk each chunk of a logical connection's bytes is a frame: the
//! connection's id (u32, big-endian), the payload's length (u32, big-endian), the
//! payload. Opening a logical connection sends nothing: both ends agree on the ids
//! ([`PLUGIN_CONN`]: the plugin's service, [`RUNTIME_CONN`]: the runtime's). A frame
//! for an id nobody opened is dropped. The bytes of one logical connection are a
//! stream: a reader must not assume that one frame holds one whole message, and a
//! writer may split a message across frames.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// The logical connection on which the plugin serves its `Plugin` service (the
/// runtime is the ttrpc client there).
pub const PLUGIN_CONN: u32 = 1;
/// The logical connection on which the runtime serves its `Runtime` service.
pub const RUNTIME_CONN: u32 = 2;

/// Bytes of a frame header: connection id, payload length.
pub const HEADER_LEN: usize = 8;

/// The largest payload this end puts in one frame. Go's NRI reads each frame in one
/// read into a buffer that may be as small as 4 KiB, so nothing bigger is ever sent.
pub const MAX_FRAME_PAYLOAD: usize = 4096;

/// The largest payload accepted in one frame: a whole ttrpc message (10-byte header
/// and at most 4 MiB) is the most the other end sends at once.
pub const MAX_READ_PAYLOAD: usize = 10 + (4 << 20);

/// Encodes `data` of connection `id` as frames of at most `max` payload bytes each.
pub fn encode(id: u32, data: &[u8], max: usize) -> Vec<u8> {
    let max = max.max(1);
    let mut out = Vec::with_capacity(data.len() + HEADER_LEN * (data.len() / max + 1));
    let mut push = |chunk: &[u8]| {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        out.extend_from_slice(chunk);
    };
    if data.is_empty() {
        push(data);
    }
    for chunk in data.chunks(max) {
        push(chunk);
    }
    out
}

/// Reads one frame from the trunk: `Ok(None)` at a clean end of stream.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<(u32, Vec<u8>)>> {
    let mut hdr = [0u8; HEADER_LEN];
    match r.read_exact(&mut hdr).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let id = u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
    let len = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]) as usize;
    if len > MAX_READ_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "multiplexer frame of connection {id} claims {len} bytes, more than {MAX_READ_PAYLOAD}"
            ),
        ));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    Ok(Some((id, buf)))
}

type Writer = Box<dyn AsyncWrite + Send + Unpin>;

struct Inner {
    writer: tokio::sync::Mutex<Option<Writer>>,
    conns: Mutex<HashMap<u32, mpsc::UnboundedSender<Bytes>>>,
}

/// One multiplexed trunk. Cloning shares it; [`Mux::close`] ends every logical
/// connection (their readers see the end of their stream).
#[derive(Clone)]
pub struct Mux {
    inner: Arc<Inner>,
    reader: Arc<ReaderTask>,
    closed: tokio_util::sync::CancellationToken,
}

/// The demultiplexing task, stopped when the last handle of its trunk goes (so the
/// socket closes then).
struct ReaderTask(tokio::task::JoinHandle<()>);

impl Drop for ReaderTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The reading end of one logical connection: the payloads of its frames, in order.
pub type ConnReader = mpsc::UnboundedReceiver<Bytes>;

impl Mux {
    /// Starts demultiplexing `stream`, with logical connections `ids` opened before
    /// the first frame is read (so none of their frames is dropped).
    pub fn start<S>(stream: S, ids: &[u32]) -> (Mux, Vec<ConnReader>)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut rd, wr) = tokio::io::split(stream);
        let mut conns = HashMap::new();
        let mut readers = Vec::new();
        for id in ids {
            let (tx, rx) = mpsc::unbounded_channel();
            conns.insert(*id, tx);
            readers.push(rx);
        }
        let inner = Arc::new(Inner {
            writer: tokio::sync::Mutex::new(Some(Box::new(wr))),
            conns: Mutex::new(conns),
        });
        let weak = Arc::downgrade(&inner);
        let closed = tokio_util::sync::CancellationToken::new();
        let ended = closed.clone();
        let reader = tokio::spawn(async move {
            let _ended = ended.drop_guard();
            loop {
                let frame = read_frame(&mut rd).await;
                let Some(inner) = weak.upgrade() else { return };
                match frame {
                    Ok(Some((id, payload))) => {
                        let conns = inner.conns.lock().unwrap_or_else(|p| p.into_inner());
                        if let Some(tx) = conns.get(&id) {
                            let _ = tx.send(Bytes::from(payload));
                        }
                    }
                    Ok(None) | Err(_) => {
                        // The trunk is gone: every logical connection ends.
                        inner
                            .conns
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .clear();
                        return;
                    }
                }
            }
        });
        (
            Mux {
                inner,
                reader: Arc::new(ReaderTask(reader)),
                closed,
            },
            readers,
        )
    }

    /// Writes `data` on logical connection `id` (whole: frames of one write are never
    /// interleaved with another's).
    pub async fn write(&self, id: u32, data: &[u8]) -> io::Result<()> {
        let frames = encode(id, data, MAX_FRAME_PAYLOAD);
        let mut w = self.inner.writer.lock().await;
        let Some(writer) = w.as_mut() else {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the multiplexed connection is closed",
            ));
        };
        let res = async {
            writer.write_all(&frames).await?;
            writer.flush().await
        }
        .await;
        if res.is_err() {
            *w = None;
        }
        res
    }

    /// Closes the trunk: the peer sees its end, every logical connection here ends.
    pub async fn close(&self) {
        self.reader.0.abort();
        self.closed.cancel();
        self.inner
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        if let Some(mut w) = self.inner.writer.lock().await.take() {
            let _ = w.shutdown().await;
        }
    }

    /// Whether the trunk has ended (read side) or been closed here.
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Resolves once the trunk has ended or been closed here.
    pub fn closed(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.closed.clone().cancelled_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_id_then_length_then_payload_big_endian() {
        let got = encode(2, b"abc", MAX_FRAME_PAYLOAD);
        assert_eq!(got, vec![0, 0, 0, 2, 0, 0, 0, 3, b'a', b'b', b'c']);
    }

    #[test]
    fn long_data_is_split_into_frames_of_at_most_max() {
        let data: Vec<u8> = (0..10u8).collect();
        let got = encode(0x0102_0304, &data, 4);
        let want: Vec<u8> = [
            &[1, 2, 3, 4, 0, 0, 0, 4, 0, 1, 2, 3][..],
            &[1, 2, 3, 4, 0, 0, 0, 4, 4, 5, 6, 7][..],
            &[1, 2, 3, 4, 0, 0, 0, 2, 8, 9][..],
        ]
        .concat();
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn frames_read_back_whatever_the_read_sizes() {
        let mut bytes = encode(1, b"hello", 2);
        bytes.extend(encode(7, b"", 2));
        let mut r = &bytes[..];
        let mut got = Vec::new();
        while let Some(f) = read_frame(&mut r).await.unwrap_or(None) {
            got.push(f);
        }
        assert_eq!(
            got,
            vec![
                (1, b"he".to_vec()),
                (1, b"ll".to_vec()),
                (1, b"o".to_vec()),
                (7, Vec::new())
            ]
        );
    }

    #[tokio::test]
    async fn a_truncated_frame_is_an_error_and_a_huge_one_is_refused() {
        let bytes = [0, 0, 0, 1, 0, 0, 0, 9, b'x'];
        assert!(read_frame(&mut &bytes[..]).await.is_err());
        let huge = [0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff];
        let err = read_frame(&mut &huge[..]).await.err();
        assert_eq!(err.map(|e| e.kind()), Some(io::ErrorKind::InvalidData));
    }

    #[tokio::test]
    async fn logical_connections_are_demultiplexed_and_unknown_ids_dropped() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap_or_else(|e| panic!("pair: {e}"));
        let (ma, _ra) = Mux::start(a, &[PLUGIN_CONN, RUNTIME_CONN]);
        let (_mb, mut rb) = Mux::start(b, &[PLUGIN_CONN, RUNTIME_CONN]);
        let big = vec![7u8; MAX_FRAME_PAYLOAD * 2 + 5];
        ma.write(RUNTIME_CONN, b"two")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        ma.write(9, b"nobody")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        ma.write(PLUGIN_CONN, &big)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut one = Vec::new();
        while one.len() < big.len() {
            let chunk = rb[0].recv().await.unwrap_or_else(|| panic!("conn 1 ended"));
            assert!(chunk.len() <= MAX_FRAME_PAYLOAD);
            one.extend_from_slice(&chunk);
        }
        assert_eq!(one, big);
        assert_eq!(rb[1].recv().await.as_deref(), Some(&b"two"[..]));
        ma.close().await;
        assert!(
            rb[0].recv().await.is_none(),
            "closing the trunk ends the peer's connections"
        );
        assert!(rb[1].recv().await.is_none());
    }
}
