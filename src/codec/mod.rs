//! PLACEHOLDER (replaced by the wt-profile merge).
use bytes::{Bytes, BytesMut};
use std::time::Duration;
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FrameCode {
    Num(u32),
    Text(String),
}
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub address: Option<u8>,
    pub code: FrameCode,
    pub payload: Bytes,
}
#[derive(Clone, Copy, Debug, Default)]
pub struct CodecStats {
    pub frames: u64,
    pub checksum_errors: u64,
    pub resyncs: u64,
    pub skipped_bytes: u64,
}
pub struct FrameCodec;
impl FrameCodec {
    pub fn new(_f: &crate::profile::Framing) -> Self {
        FrameCodec
    }
    pub fn stats(&self) -> CodecStats {
        CodecStats::default()
    }
    pub fn needs_silence(&self) -> Option<Duration> {
        None
    }
    pub fn decode_silence(&mut self, _buf: &mut BytesMut) -> Option<Frame> {
        None
    }
}
impl tokio_util::codec::Decoder for FrameCodec {
    type Item = Frame;
    type Error = std::io::Error;
    fn decode(&mut self, _src: &mut BytesMut) -> Result<Option<Frame>, std::io::Error> {
        todo!()
    }
}
impl tokio_util::codec::Encoder<&Frame> for FrameCodec {
    type Error = std::io::Error;
    fn encode(&mut self, _f: &Frame, _dst: &mut BytesMut) -> Result<(), std::io::Error> {
        todo!()
    }
}
