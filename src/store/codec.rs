//! Byte layouts of what the journal holds: outbox items, commit bodies (a
//! list of [`Mutation`]s) and snapshots. Little-endian integers, u32 length
//! prefixes. The journal's framing checksums every body, so a decode error
//! here means a bug or a file written by something else, never a torn write.

use super::state::{Mutation, Snapshot};
use super::{CommandRecord, ItemClass, MachineState, OutItem};

const COMMIT: u8 = b'C';
const SNAPSHOT: u8 = b'P';

const PUT: u8 = 1;
const REMOVE: u8 = 2;
const DROP: u8 = 3;
const MACHINE: u8 = 4;
const COMMAND: u8 = 5;
const PUT_BATCH: u8 = 6;
const REMOVE_BATCH: u8 = 7;

/// Version bytes of the outbox encoding, so the layout can change without
/// misreading old files. V1 (no class byte) is still read: its items are events,
/// the only thing stored in the outbox back then besides results, and treating a
/// result as an event only makes it outlive telemetry a little longer.
const OUT_V1: u8 = 1;
const OUT_V2: u8 = 2;
const OUT_V3: u8 = 3;

/// Compact binary form of an [`OutItem`]: version, class, qos, retain, topic length
/// (u16 LE; MQTT caps topics at 65535 bytes), topic, payload. The outbox is written
/// once per event, so this is the figure that matters for bytes-per-event.
/// Version 3, only for items with MQTT 5 correlation data, has that data (u16 LE
/// length, bytes; MQTT caps it at 65535 bytes too) between topic and payload.
pub(crate) fn encode_out(item: &OutItem) -> Result<Vec<u8>, String> {
    let topic = item.topic.as_bytes();
    let len = u16::try_from(topic.len())
        .map_err(|_| format!("topic of {} bytes exceeds MQTT's 65535", topic.len()))?;
    let correlation = item.correlation.as_deref();
    let mut out = Vec::with_capacity(
        8 + topic.len() + correlation.map_or(0, <[u8]>::len) + item.payload.len(),
    );
    out.push(if correlation.is_some() {
        OUT_V3
    } else {
        OUT_V2
    });
    out.push(item.class.as_u8());
    out.push(item.qos);
    out.push(u8::from(item.retain));
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(topic);
    if let Some(data) = correlation {
        let len = u16::try_from(data.len()).map_err(|_| {
            format!(
                "correlation data of {} bytes exceeds MQTT's 65535",
                data.len()
            )
        })?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(data);
    }
    out.extend_from_slice(&item.payload);
    Ok(out)
}

/// The class of an encoded item without decoding the rest, for acks and drops.
pub(crate) fn class_of(bytes: &[u8]) -> Result<ItemClass, String> {
    match bytes {
        [OUT_V1, ..] => Ok(ItemClass::Event),
        [OUT_V2 | OUT_V3, class, ..] => {
            ItemClass::from_u8(*class).ok_or_else(|| format!("unknown item class {class}"))
        }
        [ver, ..] => Err(format!("unknown encoding version {ver}")),
        [] => Err("empty record".into()),
    }
}

pub(crate) fn decode_out(bytes: &[u8]) -> Result<OutItem, String> {
    let (version, class, body) = match bytes {
        [OUT_V1, body @ ..] => (OUT_V1, ItemClass::Event, body),
        [version @ (OUT_V2 | OUT_V3), class, body @ ..] => (
            *version,
            ItemClass::from_u8(*class).ok_or_else(|| format!("unknown item class {class}"))?,
            body,
        ),
        [ver, ..] => return Err(format!("unknown encoding version {ver}")),
        [] => return Err("empty record".into()),
    };
    let [qos, retain, rest @ ..] = body else {
        return Err(format!(
            "{} bytes is shorter than the item header",
            bytes.len()
        ));
    };
    if *qos > 2 || *retain > 1 {
        return Err(format!("invalid qos {qos} or retain {retain}"));
    }
    let (topic, rest) = take_prefixed(rest, "topic")?;
    let topic =
        String::from_utf8(topic.to_vec()).map_err(|e| format!("topic is not UTF-8: {e}"))?;
    let (correlation, payload) = if version == OUT_V3 {
        let (data, payload) = take_prefixed(rest, "correlation data")?;
        (Some(data.to_vec()), payload)
    } else {
        (None, rest)
    };
    Ok(OutItem {
        topic,
        payload: payload.to_vec(),
        qos: *qos,
        retain: *retain == 1,
        class,
        correlation,
    })
}

/// A u16 LE length and that many bytes, and what follows them.
fn take_prefixed<'a>(bytes: &'a [u8], what: &str) -> Result<(&'a [u8], &'a [u8]), String> {
    let [l0, l1, rest @ ..] = bytes else {
        return Err(format!("the {what} length is cut off"));
    };
    let len = usize::from(u16::from_le_bytes([*l0, *l1]));
    if rest.len() < len {
        return Err(format!(
            "{what} length {len} exceeds the {} bytes left",
            rest.len()
        ));
    }
    Ok(rest.split_at(len))
}

/// A commit body, and where each Put's item bytes start within it.
pub(crate) fn encode_commit(mutations: &[Mutation]) -> (Vec<u8>, Vec<u64>) {
    let mut out = Out(Vec::with_capacity(64));
    let mut at = Vec::new();
    out.0.push(COMMIT);
    for m in mutations {
        match m {
            Mutation::Put { session, id, item } => {
                out.tag(PUT).str(session).u64(*id);
                out.u32(item.len());
                at.push(out.0.len() as u64);
                out.0.extend_from_slice(item);
            }
            Mutation::Remove { id } => {
                out.tag(REMOVE).u64(*id);
            }
            Mutation::Drop { id } => {
                out.tag(DROP).u64(*id);
            }
            Mutation::Machine { machine, state } => {
                out.tag(MACHINE).str(machine).machine(state);
            }
            Mutation::Command { machine, record } => {
                out.tag(COMMAND).str(machine).command(record);
            }
            Mutation::PutBatch { machine, id, steps } => {
                out.tag(PUT_BATCH).str(machine).str(id).str(steps);
            }
            Mutation::RemoveBatch { machine, id } => {
                out.tag(REMOVE_BATCH).str(machine).str(id);
            }
        }
    }
    (out.0, at)
}

/// The mutations of a commit body, and where each Put's item bytes start.
pub(crate) fn decode_commit(body: &[u8]) -> Result<(Vec<Mutation>, Vec<u64>), String> {
    let mut r = In { bytes: body, at: 0 };
    if r.u8()? != COMMIT {
        return Err("not a commit record".into());
    }
    let mut mutations = Vec::new();
    let mut at = Vec::new();
    while r.at < body.len() {
        let m = match r.u8()? {
            PUT => {
                let session = r.string()?;
                let id = r.u64()?;
                let len = r.len()?;
                at.push(r.at as u64);
                let item = r.take(len)?.to_vec();
                Mutation::Put { session, id, item }
            }
            REMOVE => Mutation::Remove { id: r.u64()? },
            DROP => Mutation::Drop { id: r.u64()? },
            MACHINE => Mutation::Machine {
                machine: r.string()?,
                state: r.machine()?,
            },
            COMMAND => Mutation::Command {
                machine: r.string()?,
                record: r.command()?,
            },
            PUT_BATCH => Mutation::PutBatch {
                machine: r.string()?,
                id: r.string()?,
                steps: r.string()?,
            },
            REMOVE_BATCH => Mutation::RemoveBatch {
                machine: r.string()?,
                id: r.string()?,
            },
            tag => return Err(format!("unknown mutation {tag} at byte {}", r.at - 1)),
        };
        mutations.push(m);
    }
    Ok((mutations, at))
}

pub(crate) fn encode_snapshot(s: &Snapshot) -> Vec<u8> {
    let mut out = Out(Vec::with_capacity(256));
    out.0.push(SNAPSHOT);
    out.u64(s.next_id);
    for n in s.dropped {
        out.u64(n);
    }
    out.u32(s.machines.len());
    for (machine, state) in &s.machines {
        out.str(machine).machine(state);
    }
    out.u32(s.commands.len());
    for (machine, record) in &s.commands {
        out.str(machine).command(record);
    }
    out.u32(s.batches.len());
    for (machine, id, steps) in &s.batches {
        out.str(machine).str(id).str(steps);
    }
    out.0
}

pub(crate) fn decode_snapshot(body: &[u8]) -> Result<Snapshot, String> {
    let mut r = In { bytes: body, at: 0 };
    if r.u8()? != SNAPSHOT {
        return Err("not a snapshot record".into());
    }
    let next_id = r.u64()?;
    let dropped = [r.u64()?, r.u64()?, r.u64()?];
    let mut s = Snapshot {
        next_id,
        dropped,
        ..Snapshot::default()
    };
    for _ in 0..r.len()? {
        s.machines.push((r.string()?, r.machine()?));
    }
    for _ in 0..r.len()? {
        s.commands.push((r.string()?, r.command()?));
    }
    for _ in 0..r.len()? {
        s.batches.push((r.string()?, r.string()?, r.string()?));
    }
    if r.at != body.len() {
        return Err(format!("{} bytes after the snapshot", body.len() - r.at));
    }
    Ok(s)
}

struct Out(Vec<u8>);

impl Out {
    fn tag(&mut self, t: u8) -> &mut Self {
        self.0.push(t);
        self
    }
    fn u32(&mut self, n: usize) -> &mut Self {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&n.to_le_bytes());
        self
    }
    fn u64(&mut self, n: u64) -> &mut Self {
        self.0.extend_from_slice(&n.to_le_bytes());
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u32(s.len());
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    /// Written with every event, so binary rather than JSON.
    fn machine(&mut self, m: &MachineState) -> &mut Self {
        self.u64(m.next_seq);
        self.0.push(m.host_seq);
        match &m.last_device_frame {
            Some((code, seq)) => {
                self.0.push(1);
                self.str(code);
                self.0.push(*seq);
            }
            None => self.0.push(0),
        }
        self
    }
    /// Written a few times per command: JSON, which the record's own serde
    /// attributes keep readable across versions.
    fn command(&mut self, record: &CommandRecord) -> &mut Self {
        let json = serde_json::to_vec(record).unwrap_or_default();
        self.u32(json.len());
        self.0.extend_from_slice(&json);
        self
    }
}

struct In<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> In<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(format!(
                "{n} bytes wanted at byte {} of a {}-byte record",
                self.at,
                self.bytes.len()
            ));
        };
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn len(&mut self) -> Result<usize, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn string(&mut self) -> Result<String, String> {
        let len = self.len()?;
        let b = self.take(len)?;
        String::from_utf8(b.to_vec()).map_err(|e| format!("a string is not UTF-8: {e}"))
    }
    fn machine(&mut self) -> Result<MachineState, String> {
        let next_seq = self.u64()?;
        let host_seq = self.u8()?;
        let last_device_frame = match self.u8()? {
            0 => None,
            1 => Some((self.string()?, self.u8()?)),
            b => return Err(format!("bad machine state flag {b}")),
        };
        Ok(MachineState {
            next_seq,
            host_seq,
            last_device_frame,
        })
    }
    fn command(&mut self) -> Result<CommandRecord, String> {
        let len = self.len()?;
        let json = self.take(len)?;
        serde_json::from_slice(json).map_err(|e| format!("a command record: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{BatchProgress, CommandPhase};

    fn record() -> CommandRecord {
        CommandRecord {
            id: "c-1".into(),
            command: "vend".into(),
            phase: CommandPhase::Written,
            at_ms: 17,
            progress: Some(BatchProgress {
                next: 2,
                ..BatchProgress::default()
            }),
            reply: None,
        }
    }

    #[test]
    fn commits_round_trip_with_item_places() {
        let item = encode_out(&OutItem {
            topic: "t".into(),
            payload: b"{}".to_vec(),
            qos: 1,
            retain: false,
            class: ItemClass::Event,
            correlation: None,
        })
        .unwrap();
        let muts = vec![
            Mutation::Put {
                session: "vm".into(),
                id: 9,
                item: item.clone(),
            },
            Mutation::Remove { id: 3 },
            Mutation::Drop { id: 4 },
            Mutation::Machine {
                machine: "vm".into(),
                state: MachineState {
                    next_seq: 5,
                    host_seq: 2,
                    last_device_frame: Some(("0x21".into(), 7)),
                },
            },
            Mutation::Command {
                machine: "vm".into(),
                record: record(),
            },
            Mutation::PutBatch {
                machine: "vm".into(),
                id: "b".into(),
                steps: "[]".into(),
            },
            Mutation::RemoveBatch {
                machine: "vm".into(),
                id: "b".into(),
            },
        ];
        let (body, at) = encode_commit(&muts);
        let (back, at_back) = decode_commit(&body).unwrap();
        assert_eq!(back, muts);
        assert_eq!(at, at_back);
        let start = at[0] as usize;
        assert_eq!(&body[start..start + item.len()], &item[..]);
        // A cut body is an error or fewer mutations, never different ones.
        for cut in 1..body.len() {
            if let Ok((some, _)) = decode_commit(&body[..cut]) {
                assert!(
                    some.len() < muts.len() && muts.starts_with(&some),
                    "cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn snapshots_round_trip() {
        let snap = Snapshot {
            next_id: 99,
            dropped: [1, 2, 3],
            machines: vec![("vm".into(), MachineState::default())],
            commands: vec![("vm".into(), record())],
            batches: vec![("vm".into(), "b".into(), "[1]".into())],
        };
        let body = encode_snapshot(&snap);
        assert_eq!(decode_snapshot(&body).unwrap(), snap);
        assert!(decode_snapshot(&body[..body.len() - 1]).is_err());
        assert!(decode_snapshot(b"C").is_err());
    }
}
