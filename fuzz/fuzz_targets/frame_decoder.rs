//! Fuzzes `vendgate::codec::FrameCodec` (the `tokio_util` decoder/encoder) with
//! the framings of the shipped VMC and CoolMax CC-200 profiles and of the
//! three fixture profiles.
//!
//! Input layout:
//!   byte 0        bits 0-1: profile (0 VMC, 1 silence + address (Modbus RTU),
//!                           2 stx-etx-dle, 3 ascii-line)
//!                 bits 2-7: chunk size - 1 (1..=64 bytes per simulated serial read)
//!   byte 1        only for the silence framings (profile 1):
//!                 bit 7:    0 = fixtures/profiles/modbus-rtu.yaml,
//!                           1 = device-profiles/coolmax-cc200.yaml (a bus line:
//!                               every frame carries its slave address)
//!                 bits 0-6: bit (i % 7) set = the line goes quiet after chunk i,
//!                           so `decode_silence` is called
//!   rest          the serial byte stream
//!
//! (Before coolmax-cc200 was added, byte 1 was an 8-bit mask taken `i % 8`;
//! the existing seeds keep working: 0xFF still means "quiet after every
//! read", now on the coolmax framing, and 0x01 "quiet after the first read".)
//!
//! Invariants (ARCHITECTURE.md, codec):
//!   * `decode`/`decode_eof` never return `Err` for data;
//!   * the buffer never holds more than `max_frame` plus the chunk just read;
//!   * `decode_eof` leaves the buffer empty (leftovers are dropped, not kept);
//!   * `stats().frames` equals the number of frames handed out;
//!   * every decoded frame re-encodes (`Encoder<&Frame>`) to bytes that a fresh
//!     codec decodes back to exactly that one frame;
//!   * framings with an address (the two Modbus RTU ones): every decoded frame
//!     has `Some(address)`, and its re-encoding is byte for byte a piece of
//!     the input (the same bytes, not merely an equivalent frame); and a frame
//!     built from the input's first bytes (address 0..=255 - any address on a
//!     bus, also broadcast 0 and the reserved 248..=255 - function code,
//!     payload) encodes, starts with its address byte, and decodes back to
//!     itself with the address kept in `Frame.address`.

#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};
use vendgate::codec::{Frame, FrameCode, FrameCodec, FramingKind};
use vendgate::profile::{Framing, Profile};

fn load(text: &str, path: &str) -> Profile {
    Profile::from_str(text, Path::new(path))
        .unwrap_or_else(|e| panic!("profile {path} does not load: {e}"))
}

/// Index of the CoolMax CC-200 profile in [`profiles`].
const COOLMAX: usize = 4;

fn profiles() -> &'static [Profile; 5] {
    static PROFILES: OnceLock<[Profile; 5]> = OnceLock::new();
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
            load(
                include_str!("../../device-profiles/coolmax-cc200.yaml"),
                "device-profiles/coolmax-cc200.yaml",
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
    let mut index = usize::from(ctl & 0b11);
    let chunk_size = usize::from(ctl >> 2) + 1;

    let mut codec = FrameCodec::new(&profiles()[index].framing);
    let silence_mask = match codec.needs_silence() {
        Some(_) => match rest.split_first() {
            Some((&m, r)) => {
                rest = r;
                if m & 0x80 != 0 {
                    index = COOLMAX;
                    codec = FrameCodec::new(&profiles()[index].framing);
                }
                m & 0x7f
            }
            None => return,
        },
        None => 0,
    };
    let profile = &profiles()[index];
    let framing = &profile.framing;
    let max = framing.max_frame;
    let quiet_after = |i: usize| silence_mask & (1 << (i % 7)) != 0;

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
        if codec.needs_silence().is_some() && quiet_after(i) {
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
        if framing.has_address() {
            assert!(
                frame.address.is_some(),
                "{}: frame {frame:?} lost its address",
                profile.name
            );
            assert!(
                contains(rest, &out),
                "{}: frame {frame:?} re-encodes as {:02X?}, which is not in the input",
                profile.name,
                &out[..]
            );
        }
    }

    if framing.has_address() {
        any_address(profile, rest);
    }
});

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// A frame for any address the field holds (one byte: 0..=255; two bytes,
/// big-endian: 0..=65535), any function code and a payload, all taken from
/// the input: it encodes, the bytes after the sync are the address, and it
/// decodes back to exactly itself.
fn any_address(profile: &Profile, rest: &[u8]) {
    let framing = &profile.framing;
    let FramingKind::Binary(binary) = &framing.kind else {
        return;
    };
    let size = binary.address;
    if rest.len() < size + binary.code_size || size > 2 {
        return;
    }
    let (address_bytes, rest) = rest.split_at(size);
    let (code_bytes, payload) = rest.split_at(binary.code_size);
    let address = address_bytes
        .iter()
        .fold(0u16, |a, &b| a << 8 | u16::from(b));
    let code = code_bytes.iter().fold(0u32, |c, &b| c << 8 | u32::from(b));
    let checksum = binary.checksum.as_ref().map_or(0, |c| c.algorithm.size());
    let overhead = binary.sync.len() + size + binary.code_size + checksum;
    let room = framing.max_frame.saturating_sub(overhead);
    let payload = &payload[..payload.len().min(room)];
    let frame = Frame {
        address: Some(address),
        code: FrameCode::Num(code),
        payload: Bytes::copy_from_slice(payload),
    };
    let mut out = BytesMut::new();
    if let Err(e) = FrameCodec::new(framing).encode(&frame, &mut out) {
        panic!("{}: frame {frame:?} does not encode: {e}", profile.name);
    }
    let start = binary.sync.len();
    assert_eq!(
        out.get(start..start + size),
        Some(address_bytes),
        "{}: frame {frame:?} encodes as {:02X?}, not starting with its address",
        profile.name,
        &out[..]
    );
    let again = decode_whole(framing, &out);
    assert_eq!(
        again.as_slice(),
        std::slice::from_ref(&frame),
        "{}: frame for address {address} encoded as {:02X?} decodes differently",
        profile.name,
        &out[..]
    );
}
