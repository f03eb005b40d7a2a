//! Table layout and value encodings. Keys are redb tuples so that everything of one
//! session or machine is one contiguous range.

use std::path::Path;

use redb::TableDefinition;
use serde::de::DeserializeOwned;

use super::{ItemClass, OutItem, StoreError};

/// `"next_outbox_id"` -> a bound on the outbox ids: every id ever handed out is
/// below it. Raised in blocks (see `writer::ID_BLOCK`) in the transaction that
/// hands out ids past it, not per commit. Versions before that stored the next
/// id itself here, which is the same promise.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(crate) const NEXT_OUTBOX_ID: &str = "next_outbox_id";
/// Legacy: the total encoded size of the outbox, which versions before the
/// in-memory totals rewrote on every commit. Deleted at open, so that an older
/// vendgate opening the file again rebuilds its totals and index instead of
/// trusting a stale figure.
pub(crate) const OUTBOX_BYTES: &str = "outbox_bytes";
/// Items dropped by the size cap, per class, since the database was created.
pub(crate) const DROPPED: [&str; 3] = ["dropped_telemetry", "dropped_results", "dropped_events"];

/// (session, id) -> encoded [`OutItem`].
pub(crate) const OUTBOX: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("outbox");
/// (class, id) -> session of every telemetry and result item in OUTBOX, so the
/// oldest of those (the next one the size cap drops) is the first entry of a
/// range. Events are not indexed: they are the bulk of the appends, and the cap
/// reaches them only once no telemetry or result is left, when the oldest event
/// is simply the oldest item of any session. Versions before indexed events
/// too; open deletes those entries.
pub(crate) const CLASS_INDEX: TableDefinition<(u8, u64), &str> =
    TableDefinition::new("outbox_by_class");
/// Legacy: session -> number of items in OUTBOX, which versions before the
/// in-memory totals rewrote on every commit. Deleted at open.
pub(crate) const OUTBOX_LEN: TableDefinition<&str, u64> = TableDefinition::new("outbox_len");

/// machine -> JSON [`super::MachineState`].
pub(crate) const MACHINES: TableDefinition<&str, &[u8]> = TableDefinition::new("machines");

/// (machine, command id) -> JSON [`super::CommandRecord`].
pub(crate) const COMMANDS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("commands");
/// (machine, at_ms, id) of Queued/Written commands, so `open_commands` is oldest-first
/// without decoding the whole id window.
pub(crate) const OPEN_BY_AGE: TableDefinition<(&str, i64, &str), ()> =
    TableDefinition::new("commands_open_by_age");
/// (machine, at_ms, id) of Done commands: pruning takes from the front of this range.
pub(crate) const DONE_BY_AGE: TableDefinition<(&str, i64, &str), ()> =
    TableDefinition::new("commands_done_by_age");
/// machine -> number of Done commands, so the count limit needs no scan.
pub(crate) const DONE_COUNT: TableDefinition<&str, u64> =
    TableDefinition::new("commands_done_count");

/// (machine, batch id) -> the JSON array of a running batch's steps.
pub(crate) const BATCHES: TableDefinition<(&str, &str), &str> = TableDefinition::new("batches");

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

/// Decodes a JSON record read from disk, turning failure into `Corrupt` with table and key.
pub(crate) fn decode_json<T: DeserializeOwned>(
    path: &Path,
    table: &'static str,
    key: impl std::fmt::Display,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        path: path.to_path_buf(),
        table,
        key: key.to_string(),
        detail: e.to_string(),
    })
}

pub(crate) fn corrupt_out(path: &Path, session: &str, id: u64, detail: String) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        table: "outbox",
        key: format!("({session:?}, {id})"),
        detail,
    }
}
