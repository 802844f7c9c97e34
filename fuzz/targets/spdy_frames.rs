//! SPDY/3.1 frames (crates/spdy `Decoder`): any bytes decode to frames and errors
//! without a panic; how the bytes are split when fed makes no difference; at most
//! one frame per 8 bytes comes out; and every decoded frame the encoder accepts
//! encodes to bytes that decode back to it (header compression context included).
//!
//! Half the mutations are structure-aware: decode, change a field of one frame
//! (ids, flags, priorities, header names and values, settings, window deltas) or
//! add, drop or reorder frames, encode again.

use crius_fuzz::{Harness, Rng, Target};
use crius_spdy::{
    Data, Decoder, Encoder, Error, Frame, GoAway, GoAwayStatus, Headers, HeadersFrame, Ping,
    RstStatus, RstStream, Setting, Settings, SynReply, SynStream, WindowUpdate,
};

use super::{PARSE_BOUND, tag};

pub const TARGET: Target = Target {
    name: "spdy_frames",
    make: || Box::new(Frames),
    dictionary: &[
        b"\x80\x03\x00\x01",
        b"\x80\x03\x00\x02",
        b"\x80\x03\x00\x03",
        b"\x80\x03\x00\x04",
        b"\x80\x03\x00\x06",
        b"\x80\x03\x00\x07",
        b"\x80\x03\x00\x08",
        b"\x80\x03\x00\x09",
        b"\x80\x02\x00\x01",
        b"\x00\x00\x00\x01",
        b"\x01\xff\xff\xff",
        b"\xff\xff\xff\xff",
        b"\x78\xbb",
        b"streamtype",
        b"stdin",
    ],
    max_len: 16384,
    time_bound: PARSE_BOUND,
    ci_iterations: 2000,
};

/// Everything a fresh decoder yields from `input` fed in pieces of the given sizes
/// (cycled), until it needs more or is poisoned.
pub fn decode_all(input: &[u8], pieces: &[usize]) -> Vec<Result<Frame, Error>> {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < input.len() {
        let n = pieces[i % pieces.len()].max(1);
        i += 1;
        let end = (pos + n).min(input.len());
        d.feed(&input[pos..end]);
        pos = end;
        loop {
            match d.next_frame() {
                Ok(Some(f)) => out.push(Ok(f)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    if d.is_poisoned() {
                        return out;
                    }
                }
            }
        }
    }
    out
}

/// Encodes frames with one encoder, skipping those it refuses; the bytes and the
/// frames that went in.
pub fn encode_all(frames: &[Frame]) -> (Vec<u8>, Vec<Frame>) {
    let mut enc = Encoder::new();
    let mut bytes = Vec::new();
    let mut sent = Vec::new();
    for f in frames {
        if enc.encode(f, &mut bytes).is_ok() {
            sent.push(f.clone());
        }
    }
    (bytes, sent)
}

struct Frames;

impl Harness for Frames {
    fn run(&mut self, input: &[u8]) -> u64 {
        let whole = decode_all(input, &[input.len().max(1)]);
        let h = crius_fuzz::rng::hash(input);
        let pieces: Vec<usize> = (0..7).map(|i| 1 + ((h >> (i * 8)) as usize % 23)).collect();
        let split = decode_all(input, &pieces);
        assert_eq!(
            whole, split,
            "fed in pieces of {pieces:?} the bytes decode differently"
        );
        assert!(
            whole.len() <= input.len() / 8 + 1,
            "{} results",
            whole.len()
        );
        let frames: Vec<Frame> = whole.iter().filter_map(|r| r.clone().ok()).collect();
        let (bytes, sent) = encode_all(&frames);
        let back = decode_all(&bytes, &[bytes.len().max(1)]);
        let back: Vec<Frame> = back
            .into_iter()
            .map(|r| r.unwrap_or_else(|e| panic!("our own encoding does not decode: {e}")))
            .collect();
        assert_eq!(back, sent, "frames change in an encode-decode round trip");
        let last = whole.last().map(|r| match r {
            Ok(f) => format!("{:?}", std::mem::discriminant(f)),
            Err(e) => format!("{e:?}")
                .split(['{', '('])
                .next()
                .unwrap_or_default()
                .to_string(),
        });
        tag(&[
            &frames.len().min(4).to_string(),
            &(frames.len() - sent.len()).min(2).to_string(),
            &last.unwrap_or_default(),
        ])
    }

    fn mutate(&mut self, input: &mut Vec<u8>, rng: &mut Rng) -> bool {
        let mut frames: Vec<Frame> = decode_all(input, &[input.len().max(1)])
            .into_iter()
            .filter_map(Result::ok)
            .collect();
        if frames.is_empty() {
            return false;
        }
        mutate_frames(&mut frames, rng);
        let (bytes, _) = encode_all(&frames);
        *input = bytes;
        true
    }
}

const NAMES: &[&str] = &[
    "streamtype",
    "port",
    "requestid",
    ":status",
    "x",
    "Streamtype",
    "",
    "a b",
    "\u{7f}",
];
const VALUES: &[&str] = &[
    "error", "stdin", "stdout", "stderr", "resize", "data", "80", "", "\0", "0",
];
const IDS: &[u32] = &[0, 1, 2, 3, 5, 7, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff];

fn headers(rng: &mut Rng, h: &mut Headers) {
    let name = NAMES[rng.below(NAMES.len())];
    let value = VALUES[rng.below(VALUES.len())];
    match rng.below(3) {
        0 => {
            h.add(name, value);
        }
        1 => {
            h.set(name, value);
        }
        _ => {
            h.remove(name);
        }
    }
}

/// One random frame.
pub fn random_frame(rng: &mut Rng) -> Frame {
    let id = IDS[rng.below(IDS.len())];
    let mut h = Headers::new();
    headers(rng, &mut h);
    match rng.below(9) {
        0 => Frame::SynStream(SynStream {
            stream_id: id,
            associated_stream_id: IDS[rng.below(IDS.len())],
            priority: rng.below(9) as u8,
            slot: rng.byte(),
            fin: rng.one_in(2),
            unidirectional: rng.one_in(2),
            headers: h,
        }),
        1 => Frame::SynReply(SynReply {
            stream_id: id,
            fin: rng.one_in(2),
            headers: h,
        }),
        2 => Frame::RstStream(RstStream {
            stream_id: id,
            status: RstStatus(rng.below(13) as u32),
        }),
        3 => Frame::Settings(Settings {
            clear_settings: rng.one_in(2),
            entries: vec![Setting {
                flags: rng.byte(),
                id: [0, 4, 7, 8, 0xff_ffff][rng.below(5)],
                value: IDS[rng.below(IDS.len())],
            }],
        }),
        4 => Frame::Ping(Ping { id }),
        5 => Frame::GoAway(GoAway {
            last_good_stream_id: id,
            status: GoAwayStatus(rng.below(4) as u32),
        }),
        6 => Frame::Headers(HeadersFrame {
            stream_id: id,
            fin: rng.one_in(2),
            headers: h,
        }),
        7 => Frame::WindowUpdate(WindowUpdate {
            stream_id: id,
            delta: IDS[rng.below(IDS.len())],
        }),
        _ => Frame::Data(Data {
            stream_id: id,
            fin: rng.one_in(2),
            data: (0..rng.below(64)).map(|_| rng.byte()).collect(),
        }),
    }
}

fn mutate_frames(frames: &mut Vec<Frame>, rng: &mut Rng) {
    let i = rng.below(frames.len());
    match rng.below(6) {
        0 => frames.insert(i, random_frame(rng)),
        1 if frames.len() > 1 => {
            frames.remove(i);
        }
        2 => {
            let j = rng.below(frames.len());
            frames.swap(i, j);
        }
        3 => {
            let f = frames[i].clone();
            frames.insert(i, f);
        }
        _ => {
            let id = IDS[rng.below(IDS.len())];
            match &mut frames[i] {
                Frame::SynStream(f) => match rng.below(4) {
                    0 => f.stream_id = id,
                    1 => f.priority = rng.below(9) as u8,
                    2 => f.fin = !f.fin,
                    _ => headers(rng, &mut f.headers),
                },
                Frame::SynReply(f) => match rng.below(2) {
                    0 => f.stream_id = id,
                    _ => headers(rng, &mut f.headers),
                },
                Frame::Headers(f) => headers(rng, &mut f.headers),
                Frame::Data(f) => match rng.below(3) {
                    0 => f.stream_id = id,
                    1 => f.fin = !f.fin,
                    _ => f.data.truncate(rng.below(f.data.len() + 1)),
                },
                Frame::RstStream(f) => f.status = RstStatus(rng.next_u64() as u32),
                Frame::Settings(f) => f.entries.push(Setting {
                    flags: rng.byte(),
                    id: rng.next_u64() as u32 & 0xff_ffff,
                    value: id,
                }),
                Frame::Ping(f) => f.id = id,
                Frame::GoAway(f) => f.last_good_stream_id = id,
                Frame::WindowUpdate(f) => f.delta = id,
            }
        }
    }
}

fn syn(id: u32, fin: bool, pairs: &[(&str, &str)]) -> Frame {
    let mut h = Headers::new();
    for (k, v) in pairs {
        h.add(k, *v);
    }
    Frame::SynStream(SynStream {
        stream_id: id,
        fin,
        headers: h,
        ..SynStream::default()
    })
}

fn data(id: u32, fin: bool, d: &[u8]) -> Frame {
    Frame::Data(Data {
        stream_id: id,
        fin,
        data: d.to_vec(),
    })
}

/// What `kubectl exec -i` sends (client-go over spdystream): the error, stdin,
/// stdout and stderr streams, stdin data, then its end.
pub fn exec_session() -> Vec<Frame> {
    vec![
        syn(1, false, &[("streamtype", "error")]),
        syn(3, false, &[("streamtype", "stdin")]),
        syn(5, false, &[("streamtype", "stdout")]),
        syn(7, false, &[("streamtype", "stderr")]),
        data(3, false, b"echo hello\n"),
        Frame::Ping(Ping { id: 1 }),
        data(3, true, b""),
        Frame::WindowUpdate(WindowUpdate {
            stream_id: 5,
            delta: 65536,
        }),
    ]
}

/// What `kubectl exec -it` sends: a tty with a resize stream.
pub fn tty_session() -> Vec<Frame> {
    vec![
        syn(1, false, &[("streamtype", "error")]),
        syn(3, false, &[("streamtype", "stdin")]),
        syn(5, false, &[("streamtype", "stdout")]),
        syn(7, false, &[("streamtype", "resize")]),
        data(7, false, b"{\"Width\":120,\"Height\":40}\n"),
        data(3, false, b"ls\r"),
        data(7, false, b"{\"Width\":80,\"Height\":24}\n"),
        Frame::GoAway(GoAway {
            last_good_stream_id: 0,
            status: GoAwayStatus::OK,
        }),
    ]
}

/// What `kubectl port-forward` sends for one connection.
pub fn port_forward_session() -> Vec<Frame> {
    vec![
        Frame::Settings(Settings {
            clear_settings: false,
            entries: vec![Setting {
                flags: 0,
                id: 7,
                value: 262_144,
            }],
        }),
        syn(
            1,
            false,
            &[
                ("streamtype", "error"),
                ("port", "8080"),
                ("requestid", "0"),
            ],
        ),
        syn(
            3,
            false,
            &[("streamtype", "data"), ("port", "8080"), ("requestid", "0")],
        ),
        data(3, false, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"),
        data(3, true, b""),
        Frame::RstStream(RstStream {
            stream_id: 1,
            status: RstStatus::CANCEL,
        }),
    ]
}

/// Seeds: the three sessions, as encoded.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("kubectl-exec", encode_all(&exec_session()).0),
        ("kubectl-exec-tty", encode_all(&tty_session()).0),
        (
            "kubectl-port-forward",
            encode_all(&port_forward_session()).0,
        ),
    ]
}
