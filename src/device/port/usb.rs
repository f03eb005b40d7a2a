//! Finding a serial adapter by USB identity (`usb: {vid, pid, serial}`), so a
//! machine is found again when its adapter comes back as another ttyUSBn.
//! Reads sysfs: each `/sys/class/tty/<name>/device` leads up to the USB
//! device directory holding `idVendor`, `idProduct` and `serial`.

use std::path::{Path, PathBuf};

use crate::config::UsbMatch;

/// The `/dev` path of the first tty whose USB device matches, searching the
/// sysfs tree under `sysfs` (normally `/sys`). Names are sorted so the
/// choice is stable when several adapters match.
pub fn find(sysfs: &Path, wanted: &UsbMatch) -> Option<PathBuf> {
    let mut names: Vec<String> = std::fs::read_dir(sysfs.join("class/tty"))
        .ok()?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.into_iter().find_map(|name| {
        let device =
            std::fs::canonicalize(sysfs.join("class/tty").join(&name).join("device")).ok()?;
        let usb = device
            .ancestors()
            .find(|dir| dir.join("idVendor").is_file())?;
        matches(usb, wanted).then(|| PathBuf::from("/dev").join(&name))
    })
}

fn matches(usb: &Path, wanted: &UsbMatch) -> bool {
    let read = |file: &str| std::fs::read_to_string(usb.join(file)).map(|s| s.trim().to_owned());
    let hex = |file: &str| {
        read(file)
            .ok()
            .and_then(|s| u16::from_str_radix(&s, 16).ok())
    };
    if hex("idVendor") != Some(wanted.vid) || hex("idProduct") != Some(wanted.pid) {
        return false;
    }
    match &wanted.serial {
        Some(serial) => read("serial").ok().as_deref() == Some(serial.as_str()),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake sysfs with two FTDI adapters (serials A1, B2) and an ACM modem.
    fn sysfs() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let add = |tty: &str, usb: &str, vid: &str, pid: &str, serial: &str| {
            let dev = root.path().join("devices/pci0/usb1").join(usb);
            let iface = dev.join(format!("{usb}:1.0")).join(tty);
            std::fs::create_dir_all(&iface).unwrap();
            std::fs::write(dev.join("idVendor"), format!("{vid}\n")).unwrap();
            std::fs::write(dev.join("idProduct"), format!("{pid}\n")).unwrap();
            std::fs::write(dev.join("serial"), format!("{serial}\n")).unwrap();
            let class = root.path().join("class/tty").join(tty);
            std::fs::create_dir_all(&class).unwrap();
            std::os::unix::fs::symlink(&iface, class.join("device")).unwrap();
        };
        add("ttyUSB0", "1-1", "0403", "6001", "A1");
        add("ttyUSB1", "1-2", "0403", "6001", "B2");
        add("ttyACM0", "1-3", "2341", "0043", "X9");
        // A tty without a USB parent (a built-in UART).
        std::fs::create_dir_all(root.path().join("class/tty/ttyS0")).unwrap();
        root
    }

    fn usb(vid: u16, pid: u16, serial: Option<&str>) -> UsbMatch {
        UsbMatch {
            vid,
            pid,
            serial: serial.map(str::to_owned),
        }
    }

    #[test]
    fn finds_the_adapter_by_serial_wherever_it_enumerated() {
        let root = sysfs();
        assert_eq!(
            find(root.path(), &usb(0x0403, 0x6001, Some("B2"))),
            Some(PathBuf::from("/dev/ttyUSB1"))
        );
        assert_eq!(
            find(root.path(), &usb(0x0403, 0x6001, Some("A1"))),
            Some(PathBuf::from("/dev/ttyUSB0"))
        );
        assert_eq!(
            find(root.path(), &usb(0x2341, 0x0043, None)),
            Some(PathBuf::from("/dev/ttyACM0"))
        );
    }

    #[test]
    fn without_serial_the_first_match_wins_and_absent_is_none() {
        let root = sysfs();
        assert_eq!(
            find(root.path(), &usb(0x0403, 0x6001, None)),
            Some(PathBuf::from("/dev/ttyUSB0"))
        );
        assert_eq!(find(root.path(), &usb(0x0403, 0x6001, Some("ZZ"))), None);
        assert_eq!(find(root.path(), &usb(0x1234, 0x5678, None)), None);
        assert_eq!(
            find(Path::new("/nonexistent"), &usb(0x0403, 0x6001, None)),
            None
        );
    }
}
