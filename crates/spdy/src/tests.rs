//! Codec tests: round trips, shared compression context, partial input,
//! malformed input, and bytes produced by moby/spdystream.

use crate::compress::{Deflater, Inflater};
use crate::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs.iter().copied().collect()
}

fn syn(stream_id: u32, pairs: &[(&str, &str)]) -> Frame {
    Frame::SynStream(SynStream {
        stream_id,
        headers: headers(pairs),
        ..SynStream::default()
    })
}

/// One of every frame type, with non-default field values.
fn every_frame() -> Vec<Frame> {
    vec![
        Frame::SynStream(SynStream {
            stream_id: 1,
            associated_stream_id: 0,
            priority: 7,
            slot: 0,
            fin: false,
            unidirectional: false,
            headers: headers(&[("streamtype", "error")]),
        }),
        Frame::SynStream(SynStream {
            stream_id: 0x7FFF_FFFF,
            associated_stream_id: 5,
            priority: 3,
            slot: 9,
            fin: true,
            unidirectional: true,
            headers: headers(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
        }),
        Frame::SynReply(SynReply {
            stream_id: 1,
            fin: false,
            headers: Headers::new(),
        }),
        Frame::SynReply(SynReply {
            stream_id: 3,
            fin: true,
            headers: headers(&[(":status", "200 OK"), ("x-empty", "")]),
        }),
        Frame::RstStream(RstStream {
            stream_id: 7,
            status: RstStatus::CANCEL,
        }),
        Frame::Settings(Settings {
            clear_settings: false,
            entries: Vec::new(),
        }),
        Frame::Settings(Settings {
            clear_settings: true,
            entries: vec![
                Setting {
                    flags: 1,
                    id: setting_id::INITIAL_WINDOW_SIZE,
                    value: 1 << 20,
                },
                Setting {
                    flags: 0,
                    id: setting_id::MAX_CONCURRENT_STREAMS,
                    value: 100,
                },
            ],
        }),
        Frame::Ping(Ping { id: 1 }),
        Frame::Ping(Ping { id: 0xFFFF_FFFE }),
        Frame::GoAway(GoAway {
            last_good_stream_id: 41,
            status: GoAwayStatus::PROTOCOL_ERROR,
        }),
        Frame::Headers(HeadersFrame {
            stream_id: 5,
            fin: true,
            headers: headers(&[("x-trailer", "done")]),
        }),
        Frame::WindowUpdate(WindowUpdate {
            stream_id: 0,
            delta: 0x7FFF_FFFF,
        }),
        Frame::WindowUpdate(WindowUpdate {
            stream_id: 9,
            delta: 1,
        }),
        Frame::Data(Data {
            stream_id: 1,
            fin: false,
            data: b"hello".to_vec(),
        }),
        Frame::Data(Data {
            stream_id: 3,
            fin: true,
            data: Vec::new(),
        }),
        Frame::Data(Data {
            stream_id: 5,
            fin: false,
            data: (0..70_000u32).map(|n| n as u8).collect(),
        }),
    ]
}

fn encode_all(frames: &[Frame]) -> Result<Vec<u8>, Error> {
    let mut encoder = Encoder::new();
    let mut out = Vec::new();
    for frame in frames {
        encoder.encode(frame, &mut out)?;
    }
    Ok(out)
}

fn decode_all(decoder: &mut Decoder) -> Result<Vec<Frame>, Error> {
    let mut frames = Vec::new();
    while let Some(frame) = decoder.next_frame()? {
        frames.push(frame);
    }
    Ok(frames)
}

/// A control frame with version 3 and an arbitrary payload.
fn control(frame_type: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    control_v(3, frame_type, flags, payload)
}

fn control_v(version: u16, frame_type: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(0x8000 | version).to_be_bytes());
    out.extend_from_slice(&frame_type.to_be_bytes());
    out.extend_from_slice(&((u32::from(flags) << 24) | payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An uncompressed header block from raw names and values.
fn raw_block(entries: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = (entries.len() as u32).to_be_bytes().to_vec();
    for (name, value) in entries {
        out.extend_from_slice(&(name.len() as u32).to_be_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value);
    }
    out
}

/// A SYN_STREAM payload carrying `block`, compressed with `deflater`.
fn syn_with_block(deflater: &mut Deflater, stream_id: u32, block: &[u8]) -> Result<Vec<u8>, Error> {
    let mut payload = stream_id.to_be_bytes().to_vec();
    payload.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    deflater.compress(block, &mut payload)?;
    Ok(control(1, 0, &payload))
}

#[test]
fn every_frame_type_round_trips() -> TestResult {
    let frames = every_frame();
    // One at a time, each through a fresh pair.
    for frame in &frames {
        let bytes = Encoder::new().encode_to_vec(frame)?;
        let mut decoder = Decoder::new();
        decoder.feed(&bytes);
        assert_eq!(decode_all(&mut decoder)?, vec![frame.clone()]);
        assert_eq!(decoder.buffered(), 0);
    }
    // All in sequence through one pair (shared compression context).
    let mut decoder = Decoder::new();
    decoder.feed(&encode_all(&frames)?);
    assert_eq!(decode_all(&mut decoder)?, frames);
    Ok(())
}

#[test]
fn fixed_layout_of_simple_frames() -> TestResult {
    let mut encoder = Encoder::new();
    assert_eq!(
        encoder.encode_to_vec(&Frame::Ping(Ping { id: 1 }))?,
        [0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]
    );
    assert_eq!(
        encoder.encode_to_vec(&Frame::WindowUpdate(WindowUpdate {
            stream_id: 0,
            delta: 0x1_0000
        }))?,
        [0x80, 3, 0, 9, 0, 0, 0, 8, 0, 0, 0, 0, 0, 1, 0, 0]
    );
    assert_eq!(
        encoder.encode_to_vec(&Frame::Data(Data {
            stream_id: 3,
            fin: true,
            data: b"hi".to_vec()
        }))?,
        [0, 0, 0, 3, 1, 0, 0, 2, b'h', b'i']
    );
    assert_eq!(
        encoder.encode_to_vec(&Frame::RstStream(RstStream {
            stream_id: 5,
            status: RstStatus::REFUSED_STREAM
        }))?,
        [0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 5, 0, 0, 0, 3]
    );
    Ok(())
}

#[test]
fn multiple_values_travel_nul_separated() -> TestResult {
    let mut h = Headers::new();
    h.add("x-multi", "a")
        .add("X-Multi", "bb")
        .add("single", "c");
    let frame = Frame::SynReply(SynReply {
        stream_id: 1,
        fin: false,
        headers: h,
    });
    let bytes = Encoder::new().encode_to_vec(&frame)?;

    // The raw block: two names, the first with "a\0bb".
    let block = Inflater::default().decompress(&bytes[12..], 1 << 20)?;
    assert_eq!(
        block,
        raw_block(&[(b"x-multi", b"a\0bb"), (b"single", b"c")])
    );

    let mut decoder = Decoder::new();
    decoder.feed(&bytes);
    let Some(Frame::SynReply(reply)) = decoder.next_frame()? else {
        return Err("expected SYN_REPLY".into());
    };
    assert_eq!(
        reply.headers.get_all("x-multi"),
        Some(&["a".to_string(), "bb".to_string()][..])
    );
    assert_eq!(reply.headers.get("single"), Some("c"));
    Ok(())
}

#[test]
fn compression_context_is_shared_across_frames() -> TestResult {
    let mut encoder = Encoder::new();
    let first = encoder.encode_to_vec(&syn(1, &[("streamtype", "stdout")]))?;
    let second = encoder.encode_to_vec(&syn(3, &[("streamtype", "stdout")]))?;
    // The second block refers back to the first: much smaller, no zlib header.
    assert!(second.len() < first.len());
    assert_ne!(second[18], 0x78);

    // A decoder that never saw the first block cannot read the second.
    let mut fresh = Decoder::new();
    fresh.feed(&second);
    assert!(matches!(fresh.next_frame(), Err(Error::Decompression(_))));

    // One that did, can.
    let mut decoder = Decoder::new();
    decoder.feed(&first);
    decoder.feed(&second);
    assert_eq!(
        decode_all(&mut decoder)?,
        [
            syn(1, &[("streamtype", "stdout")]),
            syn(3, &[("streamtype", "stdout")])
        ]
    );
    Ok(())
}

#[test]
fn input_fed_byte_by_byte() -> TestResult {
    let frames = every_frame();
    let bytes = encode_all(&frames)?;
    let mut decoder = Decoder::new();
    let mut decoded = Vec::new();
    for byte in &bytes {
        decoder.feed(std::slice::from_ref(byte));
        while let Some(frame) = decoder.next_frame()? {
            decoded.push(frame);
        }
    }
    assert_eq!(decoded, frames);
    assert_eq!(decoder.buffered(), 0);
    Ok(())
}

#[test]
fn input_fed_in_uneven_chunks() -> TestResult {
    let frames = every_frame();
    let bytes = encode_all(&frames)?;
    let mut decoder = Decoder::new();
    let mut decoded = Vec::new();
    let mut rest = &bytes[..];
    let mut size = 1;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        decoder.feed(chunk);
        decoded.extend(decode_all(&mut decoder)?);
        rest = tail;
        size = size * 3 % 1013 + 1;
    }
    assert_eq!(decoded, frames);
    Ok(())
}

#[test]
fn unsupported_version_is_a_session_error() {
    let mut decoder = Decoder::new();
    decoder.feed(&control_v(2, 6, 0, &[0, 0, 0, 1]));
    assert_eq!(decoder.next_frame(), Err(Error::UnsupportedVersion(2)));
    assert!(decoder.is_poisoned());
    decoder.feed(&control(6, 0, &[0, 0, 0, 1]));
    assert_eq!(decoder.next_frame(), Err(Error::Poisoned));
}

#[test]
fn truncated_input_waits_and_wrong_lengths_are_refused() -> TestResult {
    // A frame cut short is simply incomplete.
    let bytes = Encoder::new().encode_to_vec(&syn(1, &[("a", "b")]))?;
    let mut decoder = Decoder::new();
    decoder.feed(&bytes[..bytes.len() - 1]);
    assert_eq!(decoder.next_frame()?, None);
    assert_eq!(decoder.buffered(), bytes.len() - 1);

    // Frames whose length cannot hold their fixed fields are errors.
    let cases: [(u16, &[u8]); 7] = [
        (1, &[0, 0, 0, 1, 0, 0, 0, 0, 0]),
        (2, &[0, 0, 1]),
        (3, &[0, 0, 0, 1, 0, 0, 0]),
        (4, &[0, 0, 0, 2, 0, 0, 0, 7, 0, 0, 0, 1]),
        (6, &[0, 0, 1]),
        (7, &[0, 0, 0, 1, 0, 0, 0, 0, 0]),
        (9, &[0, 0, 0, 1, 0, 0, 1]),
    ];
    for (frame_type, payload) in cases {
        let mut decoder = Decoder::new();
        decoder.feed(&control(frame_type, 0, payload));
        let result = decoder.next_frame();
        assert!(
            matches!(result, Err(Error::InvalidFrame { .. })),
            "type {frame_type}: {result:?}"
        );
    }
    Ok(())
}

#[test]
fn settings_with_a_huge_count_is_refused_without_allocating() {
    let mut decoder = Decoder::new();
    decoder.feed(&control(4, 0, &[0xFF, 0xFF, 0xFF, 0xFF]));
    assert!(matches!(
        decoder.next_frame(),
        Err(Error::InvalidFrame {
            frame: "SETTINGS",
            ..
        })
    ));
}

#[test]
fn oversized_length_is_refused_before_the_payload_arrives() {
    let mut decoder = Decoder::with_limits(Limits {
        max_frame_len: 1024,
        ..Limits::default()
    });
    // Only the 8-byte header of a data frame announcing 1025 bytes.
    decoder.feed(&[0, 0, 0, 1, 0, 0, 4, 1]);
    assert_eq!(
        decoder.next_frame(),
        Err(Error::FrameTooLarge {
            length: 1025,
            max: 1024
        })
    );
    assert!(decoder.is_poisoned());

    // The default limit accepts the largest length the wire can express.
    let mut decoder = Decoder::new();
    decoder.feed(&[0, 0, 0, 1, 0, 0xFF, 0xFF, 0xFF]);
    assert_eq!(decoder.next_frame(), Ok(None));
}

#[test]
fn stream_id_zero_is_refused() -> TestResult {
    let mut deflater = Deflater::default();
    let mut decoder = Decoder::new();
    decoder.feed(&syn_with_block(
        &mut deflater,
        0,
        &raw_block(&[(b"a", b"b")]),
    )?);
    assert_eq!(
        decoder.next_frame(),
        Err(Error::ZeroStreamId {
            frame: "SYN_STREAM"
        })
    );

    for bytes in [
        vec![0, 0, 0, 0, 0, 0, 0, 1, b'x'],
        control(3, 0, &[0, 0, 0, 0, 0, 0, 0, 5]),
    ] {
        let mut decoder = Decoder::new();
        decoder.feed(&bytes);
        assert!(matches!(
            decoder.next_frame(),
            Err(Error::ZeroStreamId { .. })
        ));
    }

    // The encoder refuses them too, and stays usable.
    let mut encoder = Encoder::new();
    assert_eq!(
        encoder.encode_to_vec(&syn(0, &[("a", "b")])),
        Err(Error::ZeroStreamId {
            frame: "SYN_STREAM"
        })
    );
    assert!(encoder.encode_to_vec(&syn(1, &[("a", "b")])).is_ok());
    Ok(())
}

#[test]
fn reserved_high_bits_are_ignored() -> TestResult {
    let mut decoder = Decoder::new();
    decoder.feed(&control(9, 0, &[0x80, 0, 0, 3, 0x80, 0, 0, 10]));
    assert_eq!(
        decoder.next_frame()?,
        Some(Frame::WindowUpdate(WindowUpdate {
            stream_id: 3,
            delta: 10
        }))
    );
    Ok(())
}

#[test]
fn corrupted_zlib_is_a_session_error() -> TestResult {
    let mut bytes = Encoder::new().encode_to_vec(&syn(1, &[("streamtype", "stdin")]))?;
    // Damage the deflate data after the zlib header and dictionary id.
    for b in &mut bytes[24..] {
        *b ^= 0x5A;
    }
    let mut decoder = Decoder::new();
    decoder.feed(&bytes);
    assert!(matches!(decoder.next_frame(), Err(Error::Decompression(_))));
    assert!(decoder.is_poisoned());

    // A block announcing a dictionary other than SPDY's is refused too.
    let mut bytes = Encoder::new().encode_to_vec(&syn(1, &[("a", "b")]))?;
    bytes[20] ^= 1;
    let mut decoder = Decoder::new();
    decoder.feed(&bytes);
    assert!(matches!(decoder.next_frame(), Err(Error::Decompression(_))));
    Ok(())
}

#[test]
fn decompression_bomb_is_refused() -> TestResult {
    // 8 MiB of one header value compresses to a few KiB.
    let value = vec![b'a'; 8 << 20];
    let block = raw_block(&[(b"x", &value)]);
    let mut deflater = Deflater::default();
    let bytes = syn_with_block(&mut deflater, 1, &block)?;
    assert!(bytes.len() < 64 * 1024, "bomb is {} bytes", bytes.len());

    let mut decoder = Decoder::new();
    decoder.feed(&bytes);
    assert_eq!(
        decoder.next_frame(),
        Err(Error::HeaderBlockTooLarge { max: 1 << 20 })
    );
    assert!(decoder.is_poisoned());

    // A block just under a custom limit passes.
    let block = raw_block(&[(b"x", &[b'a'; 1000])]);
    let mut decoder = Decoder::with_limits(Limits {
        max_header_block: block.len(),
        ..Limits::default()
    });
    decoder.feed(&syn_with_block(&mut Deflater::default(), 1, &block)?);
    assert!(decoder.next_frame()?.is_some());
    Ok(())
}

#[test]
fn malformed_header_blocks_are_stream_errors() -> TestResult {
    let bad_blocks: Vec<(Vec<u8>, &str)> = vec![
        (
            raw_block(&[(b"Upper", b"v")]),
            "header name is not lower-case ASCII",
        ),
        (raw_block(&[(b"", b"v")]), "empty header name"),
        (
            raw_block(&[(b"a", b"1"), (b"a", b"2")]),
            "duplicate header name",
        ),
        (
            raw_block(&[(b"a", b"\0x")]),
            "empty value in a NUL-separated list",
        ),
        (
            raw_block(&[(b"a", b"x\0")]),
            "empty value in a NUL-separated list",
        ),
        (
            raw_block(&[(b"a", b"x\0\0y")]),
            "empty value in a NUL-separated list",
        ),
        (raw_block(&[(b"a", b"\xff")]), "header value is not UTF-8"),
        (vec![0, 0, 1, 0], "header count exceeds the block"),
        (vec![0, 0, 0, 1, 0, 0, 0, 9, b'a', 0, 0, 0], "truncated"),
        (vec![0, 0], "truncated"),
        (
            [raw_block(&[(b"a", b"b")]), vec![0]].concat(),
            "trailing bytes after the last header",
        ),
    ];
    // All through one decoder: after each stream error the shared context is
    // still in step, so the next frame decodes.
    let mut deflater = Deflater::default();
    let mut decoder = Decoder::new();
    for (i, (block, reason)) in bad_blocks.iter().enumerate() {
        let stream_id = 2 * i as u32 + 1;
        decoder.feed(&syn_with_block(&mut deflater, stream_id, block)?);
        let err = decoder.next_frame();
        assert_eq!(
            err,
            Err(Error::InvalidHeaderBlock { stream_id, reason }),
            "block {i}"
        );
        assert_eq!(err.err().and_then(|e| e.stream_id()), Some(stream_id));
        assert!(!decoder.is_poisoned());
    }
    decoder.feed(&syn_with_block(
        &mut deflater,
        99,
        &raw_block(&[(b"ok", b"yes")]),
    )?);
    assert_eq!(decoder.next_frame()?, Some(syn(99, &[("ok", "yes")])));
    Ok(())
}

#[test]
fn empty_header_block_bytes_mean_no_headers() -> TestResult {
    let mut decoder = Decoder::new();
    decoder.feed(&control(1, 0, &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]));
    assert_eq!(decoder.next_frame()?, Some(syn(1, &[])));
    Ok(())
}

#[test]
fn unknown_control_frames_are_skipped() -> TestResult {
    let mut decoder = Decoder::new();
    decoder.feed(&control(5, 0, &[])); // NOOP, gone in SPDY/3
    decoder.feed(&control(10, 0, &[1, 2, 3, 4, 5])); // CREDENTIAL
    decoder.feed(&control(6, 0, &[0, 0, 0, 3]));
    assert_eq!(decoder.next_frame()?, Some(Frame::Ping(Ping { id: 3 })));
    assert_eq!(decoder.next_frame()?, None);
    Ok(())
}

#[test]
fn encoder_refuses_invalid_frames_and_stays_usable() -> TestResult {
    let mut encoder = Encoder::new();
    let mut nul = Headers::new();
    nul.add("a", "x\0y");
    let mut empty_among_many = Headers::new();
    empty_among_many.add("a", "").add("a", "b");
    let mut non_ascii = Headers::new();
    non_ascii.add("é", "x");
    let invalid = [
        Frame::SynStream(SynStream {
            stream_id: 1,
            priority: 8,
            ..SynStream::default()
        }),
        Frame::SynStream(SynStream {
            stream_id: 0x8000_0001,
            ..SynStream::default()
        }),
        Frame::SynReply(SynReply {
            stream_id: 1,
            fin: false,
            headers: nul,
        }),
        Frame::Headers(HeadersFrame {
            stream_id: 1,
            fin: false,
            headers: empty_among_many,
        }),
        Frame::Headers(HeadersFrame {
            stream_id: 1,
            fin: false,
            headers: non_ascii,
        }),
        Frame::WindowUpdate(WindowUpdate {
            stream_id: 1,
            delta: 0,
        }),
        Frame::Settings(Settings {
            clear_settings: false,
            entries: vec![Setting {
                flags: 0,
                id: 1 << 24,
                value: 0,
            }],
        }),
        Frame::Data(Data {
            stream_id: 1,
            fin: false,
            data: vec![0; MAX_FRAME_PAYLOAD + 1],
        }),
    ];
    let mut out = Vec::new();
    for frame in &invalid {
        assert!(encoder.encode(frame, &mut out).is_err(), "{frame:?}");
    }
    assert!(out.is_empty());
    // Nothing reached the compression context: a peer decodes what follows.
    let good = syn(1, &[("streamtype", "stdout")]);
    let mut decoder = Decoder::new();
    decoder.feed(&encoder.encode_to_vec(&good)?);
    assert_eq!(decoder.next_frame()?, Some(good));
    Ok(())
}

#[test]
fn frame_accessors() {
    let frames = every_frame();
    let ids: Vec<Option<u32>> = frames.iter().map(Frame::stream_id).collect();
    assert_eq!(ids[0], Some(1));
    assert_eq!(ids[5], None);
    assert_eq!(ids[11], Some(0));
    assert!(frames[1].is_fin());
    assert!(!frames[0].is_fin());
    let Frame::Settings(settings) = &frames[6] else {
        unreachable!("frame 6 is SETTINGS")
    };
    assert_eq!(settings.get(setting_id::INITIAL_WINDOW_SIZE), Some(1 << 20));
    assert_eq!(settings.get(setting_id::ROUND_TRIP_TIME), None);
}

#[test]
fn error_kinds() {
    assert_eq!(Error::Poisoned.stream_id(), None);
    assert_eq!(
        Error::InvalidHeaderBlock {
            stream_id: 3,
            reason: "x"
        }
        .stream_id(),
        Some(3)
    );
    assert!(Error::UnsupportedVersion(2).to_string().contains('2'));
}

/// Frames written by moby/spdystream's framer (the one kubectl and the
/// kubelet's streaming client use), captured once as hex, all from one framer
/// so the two SYN_STREAMs share a compression context.
const SPDYSTREAM_FRAMES: [&str; 5] = [
    // SYN_STREAM 1, {streamtype: error}
    "80030001000000290000000100000000000078f9e3c6a7c26260606004a7b392a2d4c45c6851c29a0a0a6800000000ffff",
    // SYN_STREAM 3, FIN, {streamtype: stdin}
    "800300010100001700000003000000000000c22e555c92929907000000ffff",
    // SYN_REPLY 1, {x-multi: [a, bb]}
    "800300020000001a00000001824ab157e8e696e6946482f24822435212000000ffff",
    // data 3, FIN, "hello"
    "000000030100000568656c6c6f",
    // PING 1
    "800300060000000400000001",
];

fn unhex(s: &str) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    (0..s.len())
        .step_by(2)
        .map(|i| {
            Ok(u8::from_str_radix(
                s.get(i..i + 2).ok_or("odd length")?,
                16,
            )?)
        })
        .collect()
}

#[test]
fn decodes_frames_written_by_spdystream() -> TestResult {
    let mut decoder = Decoder::new();
    for hex in SPDYSTREAM_FRAMES {
        decoder.feed(&unhex(hex)?);
    }
    let mut stdin = syn(3, &[("streamtype", "stdin")]);
    if let Frame::SynStream(s) = &mut stdin {
        s.fin = true;
    }
    let mut multi = Headers::new();
    multi.add("x-multi", "a").add("x-multi", "bb");
    assert_eq!(
        decode_all(&mut decoder)?,
        [
            syn(1, &[("streamtype", "error")]),
            stdin,
            Frame::SynReply(SynReply {
                stream_id: 1,
                fin: false,
                headers: multi,
            }),
            Frame::Data(Data {
                stream_id: 3,
                fin: true,
                data: b"hello".to_vec(),
            }),
            Frame::Ping(Ping { id: 1 }),
        ]
    );
    Ok(())
}

#[test]
fn spdystream_frames_decode_only_in_order() -> TestResult {
    // The second SYN_STREAM depends on the first one's compression state.
    let mut decoder = Decoder::new();
    decoder.feed(&unhex(SPDYSTREAM_FRAMES[1])?);
    assert!(matches!(decoder.next_frame(), Err(Error::Decompression(_))));
    Ok(())
}

/// A small deterministic generator, so the mutation test needs no dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn mutated_and_random_input_never_panics() -> TestResult {
    let valid = encode_all(&every_frame())?;
    let mut rng = XorShift(0x5EED_1234_ABCD_0001);
    for round in 0..3000 {
        let mut bytes = if round % 4 == 0 {
            (0..rng.below(300)).map(|_| rng.next() as u8).collect()
        } else {
            valid.clone()
        };
        for _ in 0..=rng.below(8) {
            if bytes.is_empty() {
                break;
            }
            let at = rng.below(bytes.len());
            match rng.below(3) {
                0 => bytes[at] ^= 1 << rng.below(8),
                1 => bytes[at] = rng.next() as u8,
                _ => bytes.truncate(at),
            }
        }
        let mut decoder = Decoder::with_limits(Limits {
            max_frame_len: 1 << 17,
            max_header_block: 1 << 16,
        });
        let mut rest = &bytes[..];
        'feed: while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(rng.below(rest.len()) + 1);
            rest = tail;
            decoder.feed(chunk);
            loop {
                match decoder.next_frame() {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) if e.stream_id().is_some() => {}
                    Err(_) => break 'feed,
                }
            }
        }
    }
    Ok(())
}
