//! The Debian package (DESIGN §1 installed layout): the metadata in
//! Cargo.toml always, and the built package itself when cargo-deb is
//! installed (`.ci/run` installs it).

mod common;

use std::path::Path;
use std::process::Command;

use common::repo;
use serde_json::Value;

fn deb_metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(repo())
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    doc["packages"][0]["metadata"]["deb"].clone()
}

/// (source, destination) of every asset.
fn assets(deb: &Value) -> Vec<(String, String)> {
    deb["assets"]
        .as_array()
        .expect("assets")
        .iter()
        .map(|a| {
            (
                a[0].as_str().unwrap_or_default().to_owned(),
                a[1].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// What `packaging/deb.sh` generates before it runs `cargo deb`.
const GENERATED: [&str; 5] = [
    "target/release/vendgate",
    "target/package/vendgate.1.gz",
    "target/package/vendgate.bash",
    "target/package/_vendgate",
    "target/package/vendgate.fish",
];

#[test]
fn the_package_metadata_gives_the_installed_layout() {
    let deb = deb_metadata();
    let assets = assets(&deb);
    let destinations: Vec<&str> = assets.iter().map(|(_, d)| d.as_str()).collect();
    for wanted in [
        "usr/bin/",
        "etc/vendgate/config.yaml",
        "usr/share/vendgate/device-profiles/",
        "usr/share/vendgate/interfaces/",
        "usr/share/man/man1/vendgate.1.gz",
        "usr/share/bash-completion/completions/vendgate",
        "usr/share/zsh/vendor-completions/_vendgate",
        "usr/share/fish/vendor_completions.d/vendgate.fish",
    ] {
        assert!(
            destinations.contains(&wanted),
            "no asset installs {wanted}: {destinations:?}"
        );
    }
    for (source, _) in &assets {
        if GENERATED.contains(&source.as_str()) {
            continue;
        }
        let dir = repo();
        let found = match source.strip_suffix("/*.yaml") {
            Some(folder) => std::fs::read_dir(dir.join(folder))
                .map(|d| {
                    d.flatten()
                        .any(|e| e.path().extension().is_some_and(|x| x == "yaml"))
                })
                .unwrap_or(false),
            None => dir.join(source).exists(),
        };
        assert!(found, "asset source {source} is missing");
    }
    assert_eq!(
        deb["conf-files"],
        serde_json::json!(["/etc/vendgate/config.yaml"])
    );
    assert_eq!(
        deb["default-features"], false,
        "the board build: no embedded broker"
    );
    // The unit comes from systemd/ and is neither enabled nor started
    // before the config was edited; no maintainer script of our own.
    assert_eq!(deb["maintainer-scripts"], "systemd/");
    let units = &deb["systemd-units"];
    assert_eq!(units["unit-name"], "vendgate");
    assert_eq!(units["enable"], false);
    assert_eq!(units["start"], false);
    for script in ["preinst", "postinst", "prerm", "postrm"] {
        assert!(
            !repo().join("systemd").join(script).exists(),
            "{script} of our own"
        );
    }
    let unit = std::fs::read_to_string(repo().join("systemd/vendgate.service")).expect("unit");
    for line in [
        "ExecStart=/usr/bin/vendgate run -c /etc/vendgate/config.yaml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "DynamicUser=yes",
        "StateDirectory=vendgate",
    ] {
        assert!(unit.contains(line), "the unit has {line}");
    }
    // The conffile is the commented example, pointed at the packaged profiles.
    let conffile = std::fs::read_to_string(repo().join("config.example.yaml")).expect("config");
    assert!(conffile.contains("\nprofiles_dir: /usr/share/vendgate/device-profiles\n"));
    assert!(
        conffile.contains("\n  path: /var/lib/vendgate\n"),
        "store.path is the StateDirectory"
    );
}

fn cargo_deb_installed() -> bool {
    Command::new("cargo-deb")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_built_package_holds_the_installed_layout() {
    if !cargo_deb_installed() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs cargo-deb: .ci/run installs it"
        );
        eprintln!("SKIPPED: cargo-deb not installed (cargo install cargo-deb)");
        return;
    }
    let out_dir = tempfile::tempdir().expect("tempdir");
    // The packaging script as documented, on the binary the tests use
    // (VENDGATE_DEB_PROFILE=dev, --no-build): the board build takes minutes
    // and changes nothing in the layout.
    let out = Command::new(repo().join("packaging/deb.sh"))
        .env("VENDGATE_DEB_PROFILE", "dev")
        .args(["", "--no-build", "--fast", "--quiet", "-o"])
        .arg(out_dir.path())
        .output()
        .expect("packaging/deb.sh");
    assert!(
        out.status.success(),
        "deb.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = std::fs::read_dir(out_dir.path())
        .expect("output")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("a .deb");
    let listing = dpkg_deb(&deb, "-c");
    for path in [
        "./usr/bin/vendgate",
        "./etc/vendgate/config.yaml",
        // /lib/systemd/system on a merged-/usr system (Debian 12 and later).
        "./usr/lib/systemd/system/vendgate.service",
        "./usr/share/vendgate/device-profiles/vmc-upper-computer.yaml",
        "./usr/share/vendgate/interfaces/nordvend-nv3.yaml",
        "./usr/share/man/man1/vendgate.1.gz",
        "./usr/share/bash-completion/completions/vendgate",
        "./usr/share/zsh/vendor-completions/_vendgate",
        "./usr/share/fish/vendor_completions.d/vendgate.fish",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(path)),
            "{path} in the package:\n{listing}"
        );
    }
    let info = dpkg_deb(&deb, "-I");
    assert!(info.contains("Package: vendgate"), "{info}");
    assert!(
        info.contains("libc6 (>= 2.36)"),
        "DT_RELR needs glibc 2.36: {info}"
    );
    let control = tempfile::tempdir().expect("tempdir");
    let status = Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(control.path())
        .status()
        .expect("dpkg-deb -e");
    assert!(status.success());
    let conffiles = std::fs::read_to_string(control.path().join("conffiles")).unwrap_or_default();
    assert_eq!(conffiles.trim(), "/etc/vendgate/config.yaml");
    let postinst = std::fs::read_to_string(control.path().join("postinst")).unwrap_or_default();
    for creates in ["adduser", "useradd", "mkdir", "chown", "install -d"] {
        assert!(
            !postinst.contains(creates),
            "postinst creates nothing ({creates}):\n{postinst}"
        );
    }
    assert!(
        !postinst.contains("deb-systemd-invoke start"),
        "not started before the config is edited:\n{postinst}"
    );
}

fn dpkg_deb(deb: &Path, flag: &str) -> String {
    let out = Command::new("dpkg-deb")
        .arg(flag)
        .arg(deb)
        .output()
        .expect("dpkg-deb");
    assert!(
        out.status.success(),
        "dpkg-deb {flag}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
