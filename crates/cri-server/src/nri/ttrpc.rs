//! ttrpc over one logical connection of the multiplexer: unary calls only, which is
//! all NRI uses.
//!
//! A message is a 10-byte header (payload length u32, stream id u32, both
//! big-endian; type u8; flags u8) and a protobuf payload: a request (service,
//! method, payload, timeout) on an odd stream id the client picks, answered by a
//! response (status, payload) on the same id. crius carries this itself, rather than
//! through the `ttrpc` crate, because the crate's client and server own a socket and
//! NRI's run over a multiplexed logical connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

use super::mux::{ConnReader, Mux};

/// Bytes of a message header.
pub const HEADER_LEN: usize = 10;
/// The largest payload of one message.
pub const MAX_MESSAGE: usize = 4 << 20;
/// A request message.
pub const TYPE_REQUEST: u8 = 1;
/// A response message.
pub const TYPE_RESPONSE: u8 = 2;

/// gRPC status codes used here.
pub mod code {
    pub const OK: i32 = 0;
    pub const UNKNOWN: i32 = 2;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const UNIMPLEMENTED: i32 = 12;
    pub const INTERNAL: i32 = 13;
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    #[prost(string, tag = "1")]
    pub service: String,
    #[prost(string, tag = "2")]
    pub method: String,
    #[prost(bytes = "vec", tag = "3")]
    pub payload: Vec<u8>,
    #[prost(int64, tag = "4")]
    pub timeout_nano: i64,
    #[prost(message, repeated, tag = "5")]
    pub metadata: Vec<KeyValue>,
}

/// A call's status (google.rpc.Status without its details).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Status {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

impl Status {
    pub fn new(code: i32, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
        }
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Response {
    #[prost(message, optional, tag = "1")]
    pub status: Option<Status>,
    #[prost(bytes = "vec", tag = "2")]
    pub payload: Vec<u8>,
}

/// One message: header and payload.
pub fn encode(stream: u32, typ: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&stream.to_be_bytes());
    out.push(typ);
    out.push(0);
    out.extend_from_slice(payload);
    out
}

/// A message read back: stream id, type, payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub stream: u32,
    pub typ: u8,
    pub payload: Bytes,
}

/// Why a stream of messages could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("ttrpc message of {0} bytes is over the limit of {MAX_MESSAGE}")]
    TooLong(usize),
}

/// Reassembles messages from the chunks of a logical connection.
pub struct MessageReader {
    rx: ConnReader,
    buf: BytesMut,
}

impl MessageReader {
    pub fn new(rx: ConnReader) -> MessageReader {
        MessageReader {
            rx,
            buf: BytesMut::new(),
        }
    }

    /// The next whole message; `Ok(None)` once the connection has ended.
    pub async fn next(&mut self) -> Result<Option<Message>, ReadError> {
        loop {
            if let Some(m) = parse(&mut self.buf)? {
                return Ok(Some(m));
            }
            match self.rx.recv().await {
                Some(chunk) => self.buf.extend_from_slice(&chunk),
                None => return Ok(None),
            }
        }
    }
}

/// Takes one whole message off the front of `buf`, if it holds one.
pub fn parse(buf: &mut BytesMut) -> Result<Option<Message>, ReadError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_MESSAGE {
        return Err(ReadError::TooLong(len));
    }
    if buf.len() < HEADER_LEN + len {
        return Ok(None);
    }
    let stream = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let typ = buf[8];
    buf.advance(HEADER_LEN);
    let payload = buf.split_to(len).freeze();
    Ok(Some(Message {
        stream,
        typ,
        payload,
    }))
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the connection is closed")]
    Closed,
    #[error("{message} (code {code})")]
    Status { code: i32, message: String },
    #[error("decoding the answer: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("sending the request: {0}")]
    Io(#[from] std::io::Error),
}

type Pending = Arc<Mutex<HashMap<u32, oneshot::Sender<Response>>>>;

/// A ttrpc client on one logical connection.
pub struct Client {
    mux: Mux,
    conn: u32,
    /// The next stream id, held while a request is written: ids reach the peer in
    /// increasing order.
    next: tokio::sync::Mutex<u32>,
    pending: Pending,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Client {
    /// A client sending on `conn` of `mux` and reading the answers from `rx`.
    pub fn new(mux: Mux, conn: u32, rx: ConnReader) -> Client {
        let pending: Pending = Arc::default();
        let answers = pending.clone();
        let reader = tokio::spawn(async move {
            let mut r = MessageReader::new(rx);
            while let Ok(Some(m)) = r.next().await {
                if m.typ != TYPE_RESPONSE {
                    continue;
                }
                let waiter = answers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&m.stream);
                if let (Some(w), Ok(resp)) =
                    (waiter, <Response as prost::Message>::decode(m.payload))
                {
                    let _ = w.send(resp);
                }
            }
            // The connection ended: every call still waiting fails as closed.
            answers.lock().unwrap_or_else(|p| p.into_inner()).clear();
        });
        Client {
            mux,
            conn,
            next: tokio::sync::Mutex::new(1),
            pending,
            reader,
        }
    }

    /// Calls `service`/`method` with `req`; fails after `timeout` without an answer.
    pub async fn call<Q, A>(
        &self,
        service: &str,
        method: &str,
        req: &Q,
        timeout: Duration,
    ) -> Result<A, CallError>
    where
        Q: prost::Message,
        A: prost::Message + Default,
    {
        let request = Request {
            service: service.to_string(),
            method: method.to_string(),
            payload: req.encode_to_vec(),
            timeout_nano: i64::try_from(timeout.as_nanos()).unwrap_or(i64::MAX),
            metadata: Vec::new(),
        };
        let payload = prost::Message::encode_to_vec(&request);
        let (tx, rx) = oneshot::channel();
        let sending = async {
            let mut next = self.next.lock().await;
            let stream = *next;
            *next = next.wrapping_add(2);
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(stream, tx);
            let msg = encode(stream, TYPE_REQUEST, &payload);
            (stream, self.mux.write(self.conn, &msg).await)
        };
        let forget = |stream: u32| {
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&stream);
        };
        let (stream, sent) = match tokio::time::timeout(timeout, sending).await {
            Ok((stream, sent)) => (stream, Ok(sent)),
            // Nothing was sent, or only part of it: the connection cannot be trusted.
            Err(e) => (0, Err(e)),
        };
        match sent {
            Err(_) => {
                forget(stream);
                return Err(CallError::Timeout(timeout));
            }
            Ok(Err(e)) => {
                forget(stream);
                return Err(CallError::Io(e));
            }
            Ok(Ok(())) => {}
        }
        if self.reader.is_finished() {
            forget(stream);
            return Err(CallError::Closed);
        }
        let resp = match tokio::time::timeout(timeout, rx).await {
            Err(_) => {
                forget(stream);
                return Err(CallError::Timeout(timeout));
            }
            Ok(Err(_)) => return Err(CallError::Closed),
            Ok(Ok(resp)) => resp,
        };
        if let Some(s) = resp.status.filter(|s| s.code != code::OK) {
            return Err(CallError::Status {
                code: s.code,
                message: s.message,
            });
        }
        Ok(A::decode(resp.payload.as_slice())?)
    }
}

/// A service's answer to one request: the encoded reply or an error status.
pub type Reply = Result<Vec<u8>, Status>;

/// What a server runs for each request: (service, method, payload) → reply.
pub type Handler = Arc<dyn Fn(String, String, Bytes) -> BoxFuture<'static, Reply> + Send + Sync>;

/// Serves requests arriving on `conn` of `mux` with `handler`, each in its own task
/// (a slow one does not hold up the others), until the connection ends.
pub fn serve(mux: Mux, conn: u32, rx: ConnReader, handler: Handler) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut r = MessageReader::new(rx);
        while let Ok(Some(m)) = r.next().await {
            if m.typ != TYPE_REQUEST {
                continue;
            }
            let (mux, handler) = (mux.clone(), handler.clone());
            tokio::spawn(async move {
                let reply = match <Request as prost::Message>::decode(m.payload) {
                    Ok(req) => handler(req.service, req.method, Bytes::from(req.payload)).await,
                    Err(e) => Err(Status::new(
                        code::INVALID_ARGUMENT,
                        format!("bad request: {e}"),
                    )),
                };
                let resp = match reply {
                    Ok(payload) => Response {
                        status: Some(Status::new(code::OK, "")),
                        payload,
                    },
                    Err(status) => Response {
                        status: Some(status),
                        payload: Vec::new(),
                    },
                };
                let msg = encode(
                    m.stream,
                    TYPE_RESPONSE,
                    &prost::Message::encode_to_vec(&resp),
                );
                let _ = mux.write(conn, &msg).await;
            });
        }
    })
}

/// Decodes a request payload, or the INVALID_ARGUMENT status a server answers.
pub fn decode<T: prost::Message + Default>(payload: Bytes) -> Result<T, Status> {
    T::decode(payload)
        .map_err(|e| Status::new(code::INVALID_ARGUMENT, format!("decoding the request: {e}")))
}

/// The reply carrying `msg`.
pub fn reply<T: prost::Message>(msg: &T) -> Reply {
    Ok(msg.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nri::mux::{PLUGIN_CONN, RUNTIME_CONN};

    #[test]
    fn a_message_is_length_stream_type_flags_then_payload() {
        let got = encode(3, TYPE_RESPONSE, b"xy");
        assert_eq!(got, vec![0, 0, 0, 2, 0, 0, 0, 3, 2, 0, b'x', b'y']);
    }

    #[test]
    fn messages_are_parsed_only_once_whole() {
        let mut all = BytesMut::from(&encode(1, TYPE_REQUEST, b"abc")[..]);
        all.extend_from_slice(&encode(3, TYPE_REQUEST, b"")[..]);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in all.iter() {
            buf.extend_from_slice(&[*b]);
            while let Some(m) = parse(&mut buf).unwrap_or_else(|e| panic!("{e}")) {
                got.push((m.stream, m.typ, m.payload.to_vec()));
            }
        }
        assert_eq!(
            got,
            vec![
                (1, TYPE_REQUEST, b"abc".to_vec()),
                (3, TYPE_REQUEST, Vec::new())
            ]
        );
        let mut huge = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 1, 0][..]);
        assert!(parse(&mut huge).is_err());
    }

    fn echo_pair() -> (Client, Mux, Mux) {
        let (a, b) = tokio::net::UnixStream::pair().unwrap_or_else(|e| panic!("pair: {e}"));
        let (ma, mut ra) = Mux::start(a, &[PLUGIN_CONN, RUNTIME_CONN]);
        let (mb, mut rb) = Mux::start(b, &[PLUGIN_CONN, RUNTIME_CONN]);
        let handler: Handler = Arc::new(|service, method, payload| {
            Box::pin(async move {
                match method.as_str() {
                    "Echo" => {
                        let mut s: Status = decode(payload)?;
                        s.message = format!("{service}/{method}: {}", s.message);
                        reply(&s)
                    }
                    "Hang" => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        reply(&Status::default())
                    }
                    "Fail" => Err(Status::new(code::INTERNAL, "refused")),
                    _ => Err(Status::new(
                        code::UNIMPLEMENTED,
                        format!("no method {method}"),
                    )),
                }
            })
        });
        serve(mb.clone(), PLUGIN_CONN, rb.remove(0), handler);
        let client = Client::new(ma.clone(), PLUGIN_CONN, ra.remove(0));
        (client, ma, mb)
    }

    #[tokio::test]
    async fn calls_are_answered_failed_and_timed_out() {
        let (client, _ma, mb) = echo_pair();
        let t = Duration::from_secs(5);
        let big = "y".repeat(10_000);
        let got: Status = client
            .call("svc", "Echo", &Status::new(1, big.clone()), t)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got.message, format!("svc/Echo: {big}"));
        let err = client
            .call::<_, Status>("svc", "Fail", &Status::default(), t)
            .await;
        assert!(
            matches!(err, Err(CallError::Status { code: code::INTERNAL, ref message }) if message == "refused"),
            "{err:?}"
        );
        let err = client
            .call::<_, Status>("svc", "Nope", &Status::default(), t)
            .await;
        assert!(
            matches!(
                err,
                Err(CallError::Status {
                    code: code::UNIMPLEMENTED,
                    ..
                })
            ),
            "{err:?}"
        );
        let short = Duration::from_millis(100);
        let err = client
            .call::<_, Status>("svc", "Hang", &Status::default(), short)
            .await;
        assert!(matches!(err, Err(CallError::Timeout(_))), "{err:?}");
        // A call while the peer goes away fails as closed, at once.
        let empty = Status::default();
        let pending = client.call::<_, Status>("svc", "Hang", &empty, t);
        let closing = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            mb.close().await;
        };
        let started = std::time::Instant::now();
        let (err, ()) = tokio::join!(pending, closing);
        assert!(matches!(err, Err(CallError::Closed)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
