//! The command router: from an MQTT command publish to a queued command or
//! an immediate result (`router.rs`), and the result payloads (`result.rs`).

pub mod batch;
pub mod parse;
mod result;
mod router;

pub use result::{CommandResult, Status};
pub use router::Router;
