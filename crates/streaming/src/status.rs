//! What goes on the error stream, and what comes on the resize stream.
//!
//! From `v4.channel.k8s.io` on, the error stream carries one JSON-encoded Kubernetes
//! `metav1.Status`: `Success`, or `Failure` with reason `NonZeroExitCode` and the code
//! as an `ExitCode` cause (client-go turns that into an exit-code error, which is how
//! `kubectl exec` and `crictl exec` exit with the command's code). Older protocols carry
//! a plain-text error message, and nothing on success.

use serde::Deserialize;
use serde_json::json;

/// How a remote command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The command (or attach) finished normally.
    Success,
    /// The command exited with this non-zero code.
    ExitCode(i32),
    /// Something else failed; the message is for the user.
    Error(String),
}

/// The error-stream payload for `Outcome` under a protocol that uses JSON status
/// (`json`), or plain text otherwise. `None`: nothing to write.
pub(crate) fn error_stream_payload(outcome: &Outcome, json: bool) -> Option<Vec<u8>> {
    if !json {
        return match outcome {
            Outcome::Success => None,
            Outcome::ExitCode(code) => {
                Some(format!("command terminated with non-zero exit code: {code}").into_bytes())
            }
            Outcome::Error(msg) => Some(msg.clone().into_bytes()),
        };
    }
    let status = match outcome {
        Outcome::Success => json!({
            "metadata": {},
            "status": "Success",
        }),
        Outcome::ExitCode(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": { "causes": [ { "reason": "ExitCode", "message": code.to_string() } ] },
        }),
        Outcome::Error(msg) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("Internal error occurred: {msg}"),
            "reason": "InternalError",
            "details": { "causes": [ { "message": msg } ] },
            "code": 500,
        }),
    };
    serde_json::to_vec(&status).ok()
}

/// A terminal size as the resize stream sends it (`{"Width":80,"Height":24}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct TermSize {
    /// Columns.
    #[serde(rename = "Width")]
    pub width: u16,
    /// Rows.
    #[serde(rename = "Height")]
    pub height: u16,
}

/// Splits a resize stream into sizes: the client writes JSON objects back to back
/// (Go's json.Encoder adds a newline; nothing else separates them). Feed bytes as they
/// come; complete objects are returned, an incomplete tail is kept.
#[derive(Default)]
pub(crate) struct ResizeDecoder {
    buf: Vec<u8>,
}

/// The most a resize stream may hold without completing an object.
const MAX_PENDING: usize = 4096;

/// A resize stream that cannot be decoded; the stream is dropped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResizeError {
    #[error("bad resize message")]
    Malformed(#[source] serde_json::Error),
    #[error("resize message longer than {max} bytes")]
    TooLong { max: usize },
}

impl ResizeDecoder {
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<Vec<TermSize>, ResizeError> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut consumed = 0;
        {
            let mut it = serde_json::Deserializer::from_slice(&self.buf).into_iter::<TermSize>();
            loop {
                match it.next() {
                    Some(Ok(size)) => {
                        out.push(size);
                        consumed = it.byte_offset();
                    }
                    Some(Err(e)) if e.is_eof() => break,
                    Some(Err(e)) => return Err(ResizeError::Malformed(e)),
                    None => {
                        consumed = it.byte_offset();
                        break;
                    }
                }
            }
        }
        self.buf.drain(..consumed);
        if self.buf.len() > MAX_PENDING {
            return Err(ResizeError::TooLong { max: MAX_PENDING });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: &[u8]) -> serde_json::Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn success_and_exit_code_status() {
        let ok = parse(&error_stream_payload(&Outcome::Success, true).unwrap());
        assert_eq!(ok["status"], "Success");
        let fail = parse(&error_stream_payload(&Outcome::ExitCode(3), true).unwrap());
        assert_eq!(fail["status"], "Failure");
        assert_eq!(fail["reason"], "NonZeroExitCode");
        assert_eq!(fail["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(fail["details"]["causes"][0]["message"], "3");
        let err = parse(&error_stream_payload(&Outcome::Error("boom".into()), true).unwrap());
        assert_eq!(err["reason"], "InternalError");
        assert!(err["message"].as_str().unwrap().contains("boom"));
    }

    #[test]
    fn plain_text_for_old_protocols() {
        assert_eq!(error_stream_payload(&Outcome::Success, false), None);
        let t = error_stream_payload(&Outcome::ExitCode(2), false).unwrap();
        assert!(String::from_utf8(t).unwrap().contains("exit code: 2"));
    }

    #[test]
    fn resize_messages_in_pieces() {
        let mut d = ResizeDecoder::default();
        assert!(d.feed(b"{\"Width\":80,").unwrap().is_empty());
        let got = d
            .feed(b"\"Height\":24}\n{\"Width\":100,\"Height\":50}\n{\"Wi")
            .unwrap();
        assert_eq!(
            got,
            vec![
                TermSize {
                    width: 80,
                    height: 24
                },
                TermSize {
                    width: 100,
                    height: 50
                }
            ]
        );
        let got = d.feed(b"dth\":1,\"Height\":2}").unwrap();
        assert_eq!(got.len(), 1);
        assert!(matches!(
            d.feed(b"not json"),
            Err(ResizeError::Malformed(_))
        ));
    }

    #[test]
    fn an_endless_resize_message_is_refused() {
        let mut d = ResizeDecoder::default();
        let mut big = b"{\"Width\":".to_vec();
        big.extend(std::iter::repeat_n(b' ', 5000));
        assert!(matches!(
            d.feed(&big),
            Err(ResizeError::TooLong { max: MAX_PENDING })
        ));
    }
}
