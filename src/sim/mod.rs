//! The device side of a profile, for `vendgate simulate`, the demo and the
//! integration tests: `board.rs` plays the link rules, following the
//! profile's optional `simulator:` section (`profile::Script`: periodic
//! messages, reactions to commands).

mod board;

pub use crate::profile::{Periodic, Script, Send};
pub use board::{Board, BoardEvent, BoardHandle, Control};

/// A pseudo-terminal pair: the device side's end, and the path the gateway
/// opens. The second end is kept open so the first does not see a hang-up
/// before the gateway opens the path.
pub fn pty_pair() -> std::io::Result<(
    tokio_serial::SerialStream,
    tokio_serial::SerialStream,
    String,
)> {
    use std::os::fd::AsRawFd;
    use tokio_serial::SerialPort;
    let (master, slave) = tokio_serial::SerialStream::pair().map_err(std::io::Error::other)?;
    // serialport opens both ends without O_CLOEXEC: a gateway started as a
    // child process would inherit the device end and keep the pty alive
    // after the simulated device goes away.
    for fd in [master.as_raw_fd(), slave.as_raw_fd()] {
        // SAFETY: fcntl on a file descriptor we own; no memory is involved.
        let ok = unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == 0;
        if !ok {
            return Err(std::io::Error::last_os_error());
        }
    }
    let path = slave
        .name()
        .ok_or_else(|| std::io::Error::other("the pseudo-terminal has no name"))?;
    Ok((master, slave, path))
}
