//! Loader and error-location tests.

use super::*;

pub(crate) fn vmc() -> Profile {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("device-profiles/vmc-upper-computer.yaml");
    Profile::load(&path).unwrap()
}

#[test]
fn vmc_profile_loads() {
    let p = vmc();
    assert_eq!(p.name, "vmc-upper-computer");
    assert_eq!(p.serial.baud, 57600);
    assert_eq!(p.messages().len(), 11);
    assert_eq!(p.commands().len(), 17);
}
