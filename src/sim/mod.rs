//! The device side of a profile, for `vendgate simulate`, the demo and the
//! integration tests: `board.rs` plays the link rules, `script.rs` reads the
//! profile's optional `simulator:` section (periodic messages, reactions
//! to commands).

mod board;
mod script;

pub use board::{Board, BoardEvent, BoardHandle, Control};
pub use script::{Periodic, Script, Send};

/// A pseudo-terminal pair: the device side's end, and the path the gateway
/// opens. The second end is kept open so the first does not see a hang-up
/// before the gateway opens the path.
pub fn pty_pair() -> std::io::Result<(
    tokio_serial::SerialStream,
    tokio_serial::SerialStream,
    String,
)> {
    use tokio_serial::SerialPort;
    let (master, slave) = tokio_serial::SerialStream::pair().map_err(std::io::Error::other)?;
    let path = slave
        .name()
        .ok_or_else(|| std::io::Error::other("the pseudo-terminal has no name"))?;
    Ok((master, slave, path))
}
