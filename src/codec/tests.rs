//! Codec unit tests; the VMC vectors are from protocols/vmc-upper-computer.md §2.

use super::*;

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

pub(crate) fn vmc() -> Framing {
    Framing {
        max_frame: 262,
        kind: FramingKind::Binary(BinaryFraming {
            sync: vec![0xFA, 0xFB],
            address: 0,
            code_size: 1,
            length: Some(LengthField {
                size: 1,
                order: ByteOrder::Big,
                before_code: false,
                covers: vec![Part::Payload],
                adjust: 0,
            }),
            checksum: Some(ChecksumField {
                algorithm: Checksum::Xor,
                order: ByteOrder::Big,
                from: Part::Sync,
                to: Part::Payload,
            }),
            stuffing: None,
            end: None,
            silence: None,
        }),
    }
}

fn decode_all(codec: &mut FrameCodec, bytes: &[u8]) -> Vec<Frame> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(f) = codec.decode(&mut buf).unwrap() {
        out.push(f);
    }
    out
}

fn frame(code: u32, payload: &[u8]) -> Frame {
    Frame {
        address: None,
        code: FrameCode::Num(code),
        payload: Bytes::copy_from_slice(payload),
    }
}

const VECTORS: [&str; 8] = [
    "FA FB 41 00 40",
    "FA FB 42 00 43",
    "FA FB 21 06 07 02 00 00 00 64 47",
    "FA FB 04 04 08 02 00 0B 00",
    "FA FB 06 05 03 01 00 00 0B 0B",
    "FA FB 12 07 04 00 0B 00 00 00 96 8D",
    "FA FB 11 0C 09 00 0B 00 00 00 96 05 0A 04 D2 00 51",
    "FA FB 70 0A 05 09 01 20 26 11 22 09 30 05 7F",
];

#[test]
fn vmc_vectors_decode_and_encode_back() {
    for v in VECTORS {
        let bytes = h(v);
        let mut codec = FrameCodec::new(&vmc());
        let frames = decode_all(&mut codec, &bytes);
        assert_eq!(frames.len(), 1, "{v}");
        assert_eq!(frames[0].code, FrameCode::Num(u32::from(bytes[2])));
        assert_eq!(&frames[0].payload[..], &bytes[4..bytes.len() - 1]);
        let mut out = BytesMut::new();
        codec.encode(&frames[0], &mut out).unwrap();
        assert_eq!(&out[..], &bytes[..], "{v}");
    }
}

#[test]
fn partial_empty_and_one_byte_buffers_wait() {
    let mut codec = FrameCodec::new(&vmc());
    let bytes = h(VECTORS[2]);
    let mut buf = BytesMut::new();
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    for (i, b) in bytes.iter().enumerate() {
        buf.extend_from_slice(&[*b]);
        let got = codec.decode(&mut buf).unwrap();
        assert_eq!(got.is_some(), i == bytes.len() - 1);
    }
    assert_eq!(codec.stats().resyncs, 0);
    assert_eq!(codec.stats().skipped_bytes, 0);
}

#[test]
fn garbage_before_inside_and_between_frames() {
    let mut codec = FrameCodec::new(&vmc());
    let mut bytes = h("00 13 FA 77");
    bytes.extend(h(VECTORS[0]));
    bytes.extend(h("FA FB FA"));
    bytes.extend(h(VECTORS[3]));
    bytes.extend(h("FB 99"));
    bytes.extend(h(VECTORS[1]));
    let frames = decode_all(&mut codec, &bytes);
    let codes: Vec<_> = frames.iter().map(|f| f.code.clone()).collect();
    assert_eq!(
        codes,
        [
            FrameCode::Num(0x41),
            FrameCode::Num(0x04),
            FrameCode::Num(0x42)
        ]
    );
    assert!(codec.stats().resyncs >= 1);
}

#[test]
fn bad_checksum_then_valid_frame() {
    let mut codec = FrameCodec::new(&vmc());
    let mut bytes = h("FA FB 21 06 07 02 00 00 00 64 48");
    bytes.extend(h(VECTORS[0]));
    let frames = decode_all(&mut codec, &bytes);
    assert_eq!(frames, [frame(0x41, &[])]);
    assert_eq!(codec.stats().checksum_errors, 1);
}

#[test]
fn sync_bytes_inside_text_do_not_lose_the_frame() {
    // Payload "FA FB" inside a frame, then a valid POLL.
    let f = frame(0x21, &h("07 02 00 00 00 64 FA FB 41 00"));
    let mut codec = FrameCodec::new(&vmc());
    let mut out = BytesMut::new();
    codec.encode(&f, &mut out).unwrap();
    out.extend_from_slice(&h(VECTORS[0]));
    assert_eq!(decode_all(&mut codec, &out), [f.clone(), frame(0x41, &[])]);
    // Truncated frame (its text holds a sync) followed by a valid frame.
    let mut codec = FrameCodec::new(&vmc());
    let mut bytes = h("FA FB 21 30 07 FA FB");
    bytes.extend(h(VECTORS[0]));
    assert_eq!(decode_all(&mut codec, &bytes), [frame(0x41, &[])]);
}

#[test]
fn impossible_length_resyncs() {
    let mut framing = vmc();
    framing.max_frame = 16;
    let mut codec = FrameCodec::new(&framing);
    let mut bytes = h("FA FB 21 F0 01 02");
    bytes.extend(h(VECTORS[1]));
    assert_eq!(decode_all(&mut codec, &bytes), [frame(0x42, &[])]);
}

#[test]
fn eof_with_trailing_garbage_is_not_an_error() {
    let mut codec = FrameCodec::new(&vmc());
    let mut buf = BytesMut::from(&h("FA FB 21 06 07")[..]);
    assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
    assert!(buf.is_empty());
}

#[test]
fn ascii_line_example() {
    let framing = Framing {
        max_frame: 82,
        kind: FramingKind::AsciiLine(AsciiLineFraming {
            start: Some(b'$'),
            separator: b',',
            checksum: Some(Checksum::Xor),
            checksum_marker: b'*',
            terminator: b"\r\n".to_vec(),
        }),
    };
    let mut codec = FrameCodec::new(&framing);
    let f = Frame {
        address: None,
        code: FrameCode::Text("TEMP".into()),
        payload: Bytes::from_static(b"21.5,OK"),
    };
    let mut out = BytesMut::new();
    codec.encode(&f, &mut out).unwrap();
    let cs = Checksum::Xor.compute(b"TEMP,21.5,OK");
    assert_eq!(&out[..], format!("$TEMP,21.5,OK*{cs:02X}\r\n").as_bytes());
    let mut bytes = b"xx$TEMP,1*00\r\n".to_vec();
    bytes.extend_from_slice(&out);
    assert_eq!(decode_all(&mut codec, &bytes), [f]);
    assert_eq!(codec.stats().checksum_errors, 1);
}

/// Fuzzing (fuzz/fuzz_targets/frame_decoder.rs) found frames the decoder
/// accepted but the encoder would never produce. Whatever is decoded must
/// re-encode, however the reads are split.
fn assert_round_trips(framing: &Framing, bytes: &[u8], chunk: usize) {
    let mut codec = FrameCodec::new(framing);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in bytes.chunks(chunk) {
        buf.extend_from_slice(piece);
        while let Some(frame) = codec.decode(&mut buf).unwrap() {
            frames.push(frame);
        }
    }
    for frame in frames {
        let mut out = BytesMut::new();
        codec
            .encode(&frame, &mut out)
            .unwrap_or_else(|e| panic!("{frame:?} decoded but does not encode: {e}"));
    }
}

fn ascii() -> Framing {
    Framing {
        max_frame: 82,
        kind: FramingKind::AsciiLine(AsciiLineFraming {
            start: Some(b'$'),
            separator: b',',
            checksum: Some(Checksum::Xor),
            checksum_marker: b'*',
            terminator: b"\r\n".to_vec(),
        }),
    }
}

#[test]
fn fuzz_regressions_ascii_framing_characters_and_length() {
    assert_round_trips(&ascii(), b"$A,$B*0B\r\n", 1);
    assert_round_trips(&ascii(), b"$$A*65\r\n", 1);
    assert_round_trips(&ascii(), b"$A,x*y*00\r\n", 1);
    let mut long = b"$A,".to_vec();
    long.extend(std::iter::repeat_n(b'x', 90));
    let cs = Checksum::Xor.compute(&long[1..]);
    long.extend_from_slice(format!("*{cs:02X}\r\n").as_bytes());
    for chunk in [1, 7, 200] {
        assert_round_trips(&ascii(), &long, chunk);
    }
}

#[test]
fn fuzz_regressions_stuffed_frames() {
    let profile = crate::profile::Profile::from_str(
        include_str!("../../fixtures/profiles/stx-etx-dle.yaml"),
        std::path::Path::new("fixtures/profiles/stx-etx-dle.yaml"),
    )
    .unwrap();
    let found = h("fafb3a10020002020251027e0202020202020202020202020202020202020202020202020202020202020202020202fe022a020202020202002e0010000002021202020202020202020202020202ff06020202020202ff02010000000000005a03");
    for chunk in [1, 63, 200] {
        assert_round_trips(&profile.framing, &found, chunk);
    }
    let mut long = h("02 32");
    long.extend(std::iter::repeat_n(0x10, 140));
    long.extend(h("5d 59 03"));
    for chunk in [1, 63, 200] {
        assert_round_trips(&profile.framing, &long, chunk);
    }
}

#[test]
fn a_two_byte_address_is_big_endian_after_the_sync_and_round_trips() {
    let mut framing = vmc();
    if let FramingKind::Binary(b) = &mut framing.kind {
        b.address = 2;
    }
    let mut codec = FrameCodec::new(&framing);
    let sent = Frame {
        address: Some(0x1234),
        ..frame(0x41, &[7])
    };
    let mut out = BytesMut::new();
    codec.encode(&sent, &mut out).unwrap();
    assert_eq!(&out[..4], &[0xFA, 0xFB, 0x12, 0x34]);
    assert_eq!(decode_all(&mut codec, &out), vec![sent]);
}
