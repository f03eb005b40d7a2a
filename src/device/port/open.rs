//! Opening a machine's serial port.

use std::path::{Path, PathBuf};

use tokio_serial::{DataBits, FlowControl, SerialPortBuilderExt, SerialStream, StopBits};

use crate::profile::{Parity, SerialDefaults};

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("serial port {path}: {source}")]
    Open {
        path: PathBuf,
        source: tokio_serial::Error,
    },
    #[error("serial port {path}: unsupported setting: {what}")]
    Setting { path: PathBuf, what: String },
}

/// Opens `path` with the profile's serial settings and `baud`.
///
/// The open is not exclusive: on Linux TIOCEXCL does not stop root anyway,
/// and pseudo-terminal peers in tests need to share the device. The store's
/// lock already keeps two gateways off the same state directory.
pub fn open_port(
    path: &Path,
    baud: u32,
    serial: &SerialDefaults,
) -> Result<SerialStream, PortError> {
    let setting = |what: String| PortError::Setting {
        path: path.to_owned(),
        what,
    };
    let data_bits = match serial.data_bits {
        5 => DataBits::Five,
        6 => DataBits::Six,
        7 => DataBits::Seven,
        8 => DataBits::Eight,
        n => return Err(setting(format!("{n} data bits"))),
    };
    let stop_bits = match serial.stop_bits {
        1 => StopBits::One,
        2 => StopBits::Two,
        n => return Err(setting(format!("{n} stop bits"))),
    };
    let parity = match serial.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Odd => tokio_serial::Parity::Odd,
        Parity::Even => tokio_serial::Parity::Even,
    };
    let open = |source| PortError::Open {
        path: path.to_owned(),
        source,
    };
    // A by-id/by-path link is resolved at every open, so an adapter that
    // comes back under another ttyUSBn is found again.
    let resolved = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let mut port = tokio_serial::new(resolved.to_string_lossy(), baud)
        .data_bits(data_bits)
        .stop_bits(stop_bits)
        .parity(parity)
        .flow_control(FlowControl::None)
        .open_native_async()
        .map_err(open)?;
    port.set_exclusive(false).map_err(open)?;
    Ok(port)
}
