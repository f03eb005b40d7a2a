//! The tables of the redb database that vendgate kept its state in before the
//! journal, read once by [`super::migrate`]; only those holding state are
//! listed (the indexes and totals beside them are rebuilt from these).

use redb::TableDefinition;

/// `"next_outbox_id"` -> a bound on the outbox ids: every id ever handed out
/// is below it. Also the drop counts of the size cap, per class.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(crate) const NEXT_OUTBOX_ID: &str = "next_outbox_id";
pub(crate) const DROPPED: [&str; 3] = ["dropped_telemetry", "dropped_results", "dropped_events"];

/// (session, id) -> encoded item, the same bytes as the journal's.
pub(crate) const OUTBOX: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("outbox");

/// machine -> JSON [`super::MachineState`].
pub(crate) const MACHINES: TableDefinition<&str, &[u8]> = TableDefinition::new("machines");

/// (machine, command id) -> JSON [`super::CommandRecord`].
pub(crate) const COMMANDS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("commands");

/// (machine, batch id) -> the JSON array of a running batch's steps.
pub(crate) const BATCHES: TableDefinition<(&str, &str), &str> = TableDefinition::new("batches");
