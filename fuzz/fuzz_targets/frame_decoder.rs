//! Fuzzes `vendgate::codec::FrameCodec` (the `tokio_util` decoder/encoder) with
//! the framings of the shipped VMC profile and of the three fixture profiles.
//!
//! Input layout:
//!   byte 0        bits 0-1: profile (0 VMC, 1 modbus-rtu, 2 stx-etx-dle, 3 ascii-line)
//!                 bits 2-7: chunk size - 1 (1..=64 bytes per simulated serial read)
//!   byte 1        only for silence framings (modbus-rtu): bit (i % 8) set = the
//!                 line goes quiet after chunk i, so `decode_silence` is called
//!   rest          the serial byte stream
//!
//! Invariants (ARCHITECTURE.md, codec):
//!   * `decode`/`decode_eof` never return `Err` for data;
//!   * the buffer never holds more than `max_frame` plus the chunk just read;
//!   * `decode_eof` leaves the buffer empty (leftovers are dropped, not kept);
//!   * `stats().frames` equals the number of frames handed out;
//!   * every decoded frame re-encodes (`Encoder<&Frame>`) to bytes that a fresh
//!     codec decodes back to exactly that one frame.

#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};
use vendgate::codec::{Frame, FrameCodec};
use vendgate::profile::{Framing, Profile};

fn load(text: &str, path: &str) -> Profile {
    Profile::from_str(text, Path::new(path))
        .unwrap_or_else(|e| panic!("profile {path} does not load: {e}"))
}

fn profiles() -> &'static [Profile; 4] {
    static PROFILES: OnceLock<[Profile; 4]> = OnceLock::new();
    PROFILES.get_or_init(|| {
        [
            load(
                include_str!("../../device-profiles/vmc-upper-computer.yaml"),
                "device-profiles/vmc-upper-computer.yaml",
            ),
            load(
                include_str!("../../fixtures/profiles/modbus-rtu.yaml"),
                "fixtures/profiles/modbus-rtu.yaml",
            ),
            load(
                include_str!("../../fixtures/profiles/stx-etx-dle.yaml"),
                "fixtures/profiles/stx-etx-dle.yaml",
            ),
            load(
                include_str!("../../fixtures/profiles/ascii-line.yaml"),
                "fixtures/profiles/ascii-line.yaml",
            ),
        ]
    })
}

/// `decode` until `Ok(None)`; data must never produce an `Err`.
fn drain(codec: &mut FrameCodec, buf: &mut BytesMut, frames: &mut Vec<Frame>) {
    loop {
        match codec.decode(buf) {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => return,
            Err(e) => panic!("decode returned Err for data: {e}"),
        }
    }
}

/// `decode_eof` until `Ok(None)`.
fn drain_eof(codec: &mut FrameCodec, buf: &mut BytesMut, frames: &mut Vec<Frame>) {
    loop {
        match codec.decode_eof(buf) {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => return,
            Err(e) => panic!("decode_eof returned Err for data: {e}"),
        }
    }
}

/// A fresh codec reading `bytes` in one piece, then silence (if the framing
/// has it) and end of stream.
fn decode_whole(framing: &Framing, bytes: &[u8]) -> Vec<Frame> {
    let mut codec = FrameCodec::new(framing);
    let mut buf = BytesMut::from(bytes);
    let mut frames = Vec::new();
    drain(&mut codec, &mut buf, &mut frames);
    if codec.needs_silence().is_some() {
        frames.extend(codec.decode_silence(&mut buf));
    }
    drain_eof(&mut codec, &mut buf, &mut frames);
    frames
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, mut rest)) = data.split_first() else {
        return;
    };
    let profile = &profiles()[usize::from(ctl & 0b11)];
    let chunk_size = usize::from(ctl >> 2) + 1;
    let framing = &profile.framing;
    let max = framing.max_frame;

    let mut codec = FrameCodec::new(framing);
    let silence_mask = match codec.needs_silence() {
        Some(_) => match rest.split_first() {
            Some((&m, r)) => {
                rest = r;
                m
            }
            None => return,
        },
        None => 0,
    };

    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for (i, chunk) in rest.chunks(chunk_size).enumerate() {
        let before = buf.len();
        buf.extend_from_slice(chunk);
        assert!(
            buf.len() <= max + chunk.len(),
            "{}: buffer holds {} bytes before this read of {} (max_frame {max})",
            profile.name,
            before,
            chunk.len()
        );
        drain(&mut codec, &mut buf, &mut frames);
        if codec.needs_silence().is_some() && silence_mask & (1 << (i % 8)) != 0 {
            frames.extend(codec.decode_silence(&mut buf));
        }
    }
    assert!(
        buf.len() <= max,
        "{}: buffer holds {} bytes at end of input (max_frame {max})",
        profile.name,
        buf.len()
    );
    drain_eof(&mut codec, &mut buf, &mut frames);
    assert!(
        buf.is_empty(),
        "{}: decode_eof left {} bytes in the buffer",
        profile.name,
        buf.len()
    );
    assert_eq!(
        codec.stats().frames,
        frames.len() as u64,
        "{}: stats().frames disagrees with the frames returned",
        profile.name
    );

    for frame in &frames {
        let mut out = BytesMut::new();
        let mut enc = FrameCodec::new(framing);
        if let Err(e) = enc.encode(frame, &mut out) {
            panic!(
                "{}: decoded frame {frame:?} does not re-encode: {e}",
                profile.name
            );
        }
        let again = decode_whole(framing, &out);
        assert_eq!(
            again.as_slice(),
            std::slice::from_ref(frame),
            "{}: frame re-encoded as {:02X?} decodes differently",
            profile.name,
            &out[..]
        );
    }
});
