//! PLACEHOLDER (replaced by the wt-store merge).
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;
#[derive(Debug, thiserror::Error)] #[error("store error")] pub struct StoreError;
#[derive(Clone)] pub struct Store;
#[derive(Clone, Debug)] pub struct StoreOptions { pub id_window: usize, pub id_ttl: Duration }
impl Default for StoreOptions { fn default() -> Self { StoreOptions { id_window: 10_000, id_ttl: Duration::from_secs(7 * 86400) } } }
#[derive(Clone, Debug, Default)] pub struct StoreStats;
impl Store {
    pub fn open(_d: &Path, _o: StoreOptions) -> Result<Store, StoreError> { todo!() }
    pub async fn write(&self, _ops: Vec<Op>) -> Result<Vec<u64>, StoreError> { todo!() }
    pub fn machine_state(&self, _m: &str) -> Result<MachineState, StoreError> { todo!() }
    pub fn outbox(&self, _s: &str, _a: Option<u64>, _l: usize) -> Result<Vec<(u64, OutItem)>, StoreError> { todo!() }
    pub fn outbox_len(&self, _s: &str) -> Result<u64, StoreError> { todo!() }
    pub async fn ack(&self, _s: &str, _ids: Vec<u64>) -> Result<(), StoreError> { todo!() }
    pub fn command(&self, _m: &str, _id: &str) -> Result<Option<CommandRecord>, StoreError> { todo!() }
    pub fn open_commands(&self, _m: &str) -> Result<Vec<CommandRecord>, StoreError> { todo!() }
    pub fn stats(&self) -> StoreStats { StoreStats }
}
#[derive(Clone, Debug)] pub enum Op { Append { session: String, item: OutItem }, SetMachine { machine: String, state: MachineState }, PutCommand { machine: String, record: CommandRecord } }
#[derive(Clone, Debug, Serialize, Deserialize)] pub struct OutItem { pub topic: String, pub payload: Vec<u8>, pub qos: u8, pub retain: bool }
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)] pub struct MachineState { pub next_seq: u64, pub host_seq: u8, pub last_device_frame: Option<(String, u8)> }
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)] pub struct CommandRecord { pub id: String, pub command: String, pub phase: CommandPhase, pub at_ms: i64 }
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)] pub enum CommandPhase { Queued, Written, Done { result: String } }
