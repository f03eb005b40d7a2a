//! Property tests over the four shipped/fixture profiles: every framing
//! round-trips, arbitrary bytes never panic and never grow the buffer past
//! the maximum frame size, and garbage never costs the next valid frame.

use std::path::Path;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use serde_json::{Map, Value};
use tokio_util::codec::{Decoder, Encoder};
use vendgate::codec::{Frame, FrameCode, FrameCodec, FramingKind};
use vendgate::profile::Profile;

fn profile(rel: &str) -> Profile {
    Profile::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
}

const PROFILES: [&str; 4] = [
    "device-profiles/vmc-upper-computer.yaml",
    "fixtures/profiles/modbus-rtu.yaml",
    "fixtures/profiles/stx-etx-dle.yaml",
    "fixtures/profiles/ascii-line.yaml",
];

/// A frame the profile's framing can carry.
fn frame_for(p: &Profile, code: u32, payload: Vec<u8>) -> Frame {
    match &p.framing.kind {
        FramingKind::AsciiLine(_) => {
            let text: Vec<u8> = payload
                .iter()
                .map(|b| b"ABCDEFGHIJ0123456789.,-"[usize::from(*b) % 23])
                .collect();
            Frame {
                address: None,
                code: FrameCode::Text(format!("C{code}")),
                payload: Bytes::from(text),
            }
        }
        FramingKind::Binary(b) => Frame {
            address: (b.address > 0).then_some((code & 0xFF) as u16),
            code: FrameCode::Num(code & 0xFF),
            payload: Bytes::from(payload),
        },
    }
}

fn decode_all(codec: &mut FrameCodec, buf: &mut BytesMut) -> Vec<Frame> {
    let mut out = Vec::new();
    while let Some(f) = codec.decode(buf).unwrap() {
        out.push(f);
    }
    if codec.needs_silence().is_some() {
        out.extend(codec.decode_silence(buf));
    }
    out
}

proptest! {
    #[test]
    fn every_framing_round_trips(which in 0..4usize, code in 0u32..256, payload in prop::collection::vec(any::<u8>(), 0..60)) {
        let p = profile(PROFILES[which]);
        let frame = frame_for(&p, code, payload);
        let mut codec = FrameCodec::new(&p.framing);
        let mut buf = BytesMut::new();
        codec.encode(&frame, &mut buf).unwrap();
        prop_assert_eq!(decode_all(&mut codec, &mut buf), vec![frame]);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(
        which in 0..4usize,
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8),
    ) {
        let p = profile(PROFILES[which]);
        let mut codec = FrameCodec::new(&p.framing);
        let mut buf = BytesMut::new();
        for chunk in chunks {
            buf.extend_from_slice(&chunk);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                if let Some(m) = p.message_for(&f.code) {
                    let _ = m.decode(f.payload.get(1..).unwrap_or(&[]));
                }
            }
            prop_assert!(buf.len() <= p.framing.max_frame);
            let _ = codec.decode_silence(&mut buf.clone());
        }
        let _ = codec.decode_eof(&mut buf).unwrap();
    }

    #[test]
    fn garbage_never_costs_the_next_frame(
        which in prop::sample::select(vec![0usize, 2, 3]),
        garbage in prop::collection::vec(any::<u8>(), 0..100),
        code in 0u32..256,
        payload in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        let p = profile(PROFILES[which]);
        // Garbage without a sync/start byte; sync bytes inside frames are covered by unit tests.
        let first = match &p.framing.kind {
            FramingKind::Binary(b) => b.sync[0],
            FramingKind::AsciiLine(a) => a.start.unwrap_or(b'\n'),
        };
        let garbage: Vec<u8> = garbage.into_iter().filter(|b| *b != first).collect();
        let frame = frame_for(&p, code, payload);
        let mut codec = FrameCodec::new(&p.framing);
        let mut buf = BytesMut::from(&garbage[..]);
        codec.encode(&frame, &mut buf).unwrap();
        prop_assert_eq!(decode_all(&mut codec, &mut buf), vec![frame]);
    }

    #[test]
    fn message_decode_never_panics(which in 0..4usize, body in prop::collection::vec(any::<u8>(), 0..80)) {
        let p = profile(PROFILES[which]);
        for m in p.messages() {
            let _ = m.decode(&body);
        }
        for c in p.commands() {
            let _ = c.decode(&body);
        }
    }

    #[test]
    fn command_encode_never_panics(
        which in 0..4usize,
        keys in prop::collection::vec(prop::sample::select(vec!["selection", "price", "time", "data", "mode", "cancel", "interval_ms", "celsius", "amount", "x"]), 0..4),
        vals in prop::collection::vec(prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
            Just(Value::Null),
            Just(serde_json::json!(["a"])),
        ], 4),
    ) {
        let p = profile(PROFILES[which]);
        let args: Map<String, Value> = keys.iter().zip(vals).map(|(k, v)| (k.to_string(), v)).collect();
        for c in p.commands() {
            if let Ok(body) = c.encode(&args) {
                // Whatever validated must decode again.
                prop_assert!(c.decode(&body).is_ok(), "{} {:?}", c.name, args);
            }
        }
    }
}

fn wire(p: &Profile, frame: &Frame) -> Vec<u8> {
    let mut out = BytesMut::new();
    FrameCodec::new(&p.framing).encode(frame, &mut out).unwrap();
    out.to_vec()
}

#[test]
fn modbus_rtu_reference_request() {
    // Read 10 holding registers from slave 1: the classic 01 03 00 00 00 0A C5 CD.
    let p = profile(PROFILES[1]);
    let f = Frame {
        address: Some(1),
        code: FrameCode::Num(3),
        payload: Bytes::from_static(&[0, 0, 0, 0x0A]),
    };
    assert_eq!(
        wire(&p, &f),
        [0x01, 0x03, 0x00, 0x00, 0x00, 0x0A, 0xC5, 0xCD]
    );
    let mut codec = FrameCodec::new(&p.framing);
    assert!(codec.needs_silence().is_some());
    let mut buf = BytesMut::from(&[0x01, 0x03, 0x00, 0x00, 0x00, 0x0A, 0xC5, 0xCD][..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert_eq!(codec.decode_silence(&mut buf), Some(f));
    let mut bad = BytesMut::from(&[0x01, 0x03, 0x00, 0x00, 0x00, 0x0A, 0xC5, 0xCE][..]);
    assert_eq!(codec.decode_silence(&mut bad), None);
    assert_eq!(codec.stats().checksum_errors, 1);
}

#[test]
fn dle_stuffing_escapes_framing_bytes() {
    let p = profile(PROFILES[2]);
    let f = Frame {
        address: None,
        code: FrameCode::Num(0x32),
        payload: Bytes::from_static(&[0x02, 0x03, 0x10, 0x41]),
    };
    let w = wire(&p, &f);
    assert_eq!(&w[..8], &[0x02, 0x32, 0x10, 0x02, 0x10, 0x03, 0x10, 0x10]);
    assert_eq!(w.last(), Some(&0x03));
    assert_eq!(
        w.iter().filter(|b| **b == 0x03).count(),
        2,
        "one escaped ETX in the payload, one real ETX"
    );
    // Garbage, a truncated frame, then the frame: the frame survives.
    let mut bytes = vec![0x55, 0x02, 0x31, 0x10];
    bytes.extend(&w);
    let mut codec = FrameCodec::new(&p.framing);
    let mut buf = BytesMut::from(&bytes[..]);
    assert_eq!(decode_all(&mut codec, &mut buf), vec![f]);
}

#[test]
fn ascii_line_vend_event_end_to_end() {
    let p = profile(PROFILES[3]);
    let line = b"$VEND,12,OK*";
    let cs = line[1..line.len() - 1].iter().fold(0u8, |a, b| a ^ b);
    let text = format!("garbage\r\n$VEND,12,OK*{cs:02X}\r\n");
    let mut codec = FrameCodec::new(&p.framing);
    let mut buf = BytesMut::from(text.as_bytes());
    let frames = decode_all(&mut codec, &mut buf);
    assert_eq!(frames.len(), 1);
    let m = p.message_for(&frames[0].code).unwrap();
    let v = m.decode(&frames[0].payload).unwrap();
    assert_eq!(
        Value::Object(v),
        serde_json::json!({"selection": 12, "result": "OK"})
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Damaged profiles give a located error, never a panic.
    #[test]
    fn damaged_profiles_never_panic(at in 0usize..6000, len in 0usize..40, insert in "[ :\\-\\[\\]{}a-z0-9\n]{0,8}") {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(PROFILES[0]);
        let text = std::fs::read_to_string(&path).unwrap();
        let mut chars: Vec<char> = text.chars().collect();
        let at = at % chars.len();
        let end = (at + len).min(chars.len());
        chars.splice(at..end, insert.chars());
        let damaged: String = chars.into_iter().collect();
        if let Err(e) = Profile::from_str(&damaged, Path::new("vmc.yaml")) {
            let msg = e.to_string();
            let mut parts = msg.splitn(4, ':');
            prop_assert_eq!(parts.next(), Some("vmc.yaml"));
            prop_assert!(parts.next().is_some_and(|l| l.parse::<usize>().is_ok()), "{}", msg);
            prop_assert!(parts.next().is_some_and(|c| c.parse::<usize>().is_ok()), "{}", msg);
        }
    }
}
