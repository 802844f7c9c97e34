//! SPDY sessions (crates/spdy `Session`, server side, as criusd runs it): a client
//! sends any bytes (frames or not) while the application accepts streams, replies
//! to or resets them, reads them to the end and writes to them. Nothing panics;
//! what the session writes back is always well-formed SPDY (it decodes without an
//! error); and once the client has sent everything and closed its side, the session
//! ends, closes its side of the socket and its tasks finish, within the bound.
//!
//! Input: one byte of application behaviour (bit 0: reset instead of reply, bit 1:
//! write to streams, bit 2: open a stream of our own, bit 3: send GOAWAY first,
//! bit 4: close the session early), then what the client sends.

use std::time::Duration;

use crius_fuzz::{Harness, Rng, Target};
use crius_spdy::session::{Role, Session, SessionConfig};
use crius_spdy::{Headers, RstStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::spdy_frames::{self, decode_all, encode_all};
use super::{IO_BOUND, runtime, tag};

pub const TARGET: Target = Target {
    name: "spdy_session",
    make: || Box::new(Sessions { rt: runtime() }),
    dictionary: spdy_frames::TARGET.dictionary,
    max_len: 16384,
    time_bound: IO_BOUND,
    ci_iterations: 500,
};

/// How long the session may take to end once the client has closed its side.
const END: Duration = Duration::from_secs(5);

struct Sessions {
    rt: tokio::runtime::Runtime,
}

async fn session(flags: u8, client_bytes: Vec<u8>) -> (usize, usize) {
    let (client, server) = tokio::io::duplex(1 << 20);
    let cfg = SessionConfig {
        max_stream_buffer: 4096,
        max_streams: 8,
        max_send_queue: 8192,
    };
    let (session, mut incoming) = Session::new(server, Role::Server, cfg);
    let app_session = session.clone();
    let app = tokio::spawn(async move {
        if flags & 8 != 0 {
            app_session.goaway().await;
        }
        if flags & 4 != 0 {
            let mut h = Headers::new();
            h.add("streamtype", "stdout");
            let s = app_session.clone();
            tokio::spawn(async move {
                if let Ok(mut st) = s.open_stream(h).await {
                    let _ = st.write_all(b"from the server").await;
                    let _ = st.shutdown().await;
                }
            });
        }
        let mut accepted = 0;
        let mut tasks = Vec::new();
        while let Some(inc) = incoming.accept().await {
            accepted += 1;
            if flags & 1 != 0 && accepted % 2 == 0 {
                inc.reset(RstStatus::REFUSED_STREAM);
                continue;
            }
            let Ok(mut st) = inc.reply(Headers::new()) else {
                continue;
            };
            tasks.push(tokio::spawn(async move {
                if flags & 2 != 0 {
                    let _ = st.write_all(b"hello from criusd\n").await;
                }
                let mut buf = Vec::new();
                let _ = st.read_to_end(&mut buf).await;
                if flags & 2 != 0 {
                    let _ = st.write_all(&buf[..buf.len().min(100)]).await;
                }
                let _ = st.shutdown().await;
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        accepted
    });
    let (mut rd, mut wr) = tokio::io::split(client);
    let reader = tokio::spawn(async move {
        let mut out = Vec::new();
        let _ = rd.read_to_end(&mut out).await;
        out
    });
    if flags & 16 != 0 {
        session.close();
    }
    let _ = wr.write_all(&client_bytes).await;
    let _ = wr.shutdown().await;
    let ended = tokio::time::timeout(END, session.closed()).await;
    assert!(
        ended.is_ok(),
        "the session did not end within {END:?} of the client closing its side"
    );
    drop(session);
    let accepted = match tokio::time::timeout(END, app).await {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => panic!("the application task failed: {e}"),
        Err(_) => panic!("streams of an ended session did not end within {END:?}"),
    };
    let out = match tokio::time::timeout(END, reader).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("the client's reader failed: {e}"),
        Err(_) => panic!("the session ended but did not close its side of the socket"),
    };
    for (i, r) in decode_all(&out, &[out.len().max(1)]).iter().enumerate() {
        if let Err(e) = r {
            panic!("frame {i} of what the session wrote does not decode: {e}");
        }
    }
    (accepted, out.len())
}

impl Harness for Sessions {
    fn run(&mut self, input: &[u8]) -> u64 {
        let flags = input.first().copied().unwrap_or(0);
        let bytes = input.get(1..).unwrap_or_default().to_vec();
        let (accepted, written) = self.rt.block_on(session(flags, bytes));
        tag(&[
            &(flags & 31).to_string(),
            &accepted.min(4).to_string(),
            &(written > 0).to_string(),
        ])
    }

    fn mutate(&mut self, input: &mut Vec<u8>, rng: &mut Rng) -> bool {
        if input.is_empty() {
            return false;
        }
        if rng.one_in(4) {
            input[0] = rng.byte();
            return true;
        }
        let mut rest = input.split_off(1);
        let done = spdy_frames::TARGET.make;
        let mut frames = done();
        if !frames.mutate(&mut rest, rng) {
            return false;
        }
        input.extend_from_slice(&rest);
        true
    }
}

/// Seeds: the client sides of `kubectl exec`, `exec -it` and `port-forward`, under
/// several application behaviours.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let with = |flags: u8, frames: Vec<crius_spdy::Frame>| {
        let mut v = vec![flags];
        v.extend(encode_all(&frames).0);
        v
    };
    vec![
        ("exec", with(0, spdy_frames::exec_session())),
        ("exec-writing", with(2, spdy_frames::exec_session())),
        ("tty-resetting", with(1 | 4, spdy_frames::tty_session())),
        ("port-forward", with(2, spdy_frames::port_forward_session())),
        (
            "port-forward-goaway",
            with(8 | 2, spdy_frames::port_forward_session()),
        ),
    ]
}
