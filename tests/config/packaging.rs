//! The shipped systemd unit (`examples/systemd/ferromq.service`) passes `systemd-analyze
//! verify` without a word: unknown keys, bad values and a missing executable are all reported
//! there. Skipped with a message without systemd-analyze, except under `CI`.

use std::path::Path;
use std::process::Command;

const UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/systemd/ferromq.service"
);
/// Where the unit expects the binary (`cargo install --path . --root /usr/local`).
const INSTALLED: &str = "/usr/local/bin/ferromq";

/// `systemd-analyze verify` of `unit`: its exit status must be 0 and it must print nothing.
fn verify(unit: &Path) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
        .expect("systemd-analyze runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify {}: {}\n{said}",
        unit.display(),
        out.status
    );
}

fn have_systemd_analyze() -> bool {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "systemd-analyze is missing under CI (apt-get install systemd)"
    );
    eprintln!("skipped: systemd-analyze is not installed");
    false
}

#[test]
fn the_systemd_unit_verifies_with_the_built_binary() {
    if !have_systemd_analyze() {
        return;
    }
    let shipped = std::fs::read_to_string(UNIT).expect("read the unit");
    assert_eq!(
        shipped.matches(&format!("ExecStart={INSTALLED} ")).count(),
        1,
        "ExecStart runs {INSTALLED}"
    );
    // verify wants the executable to exist: the built one stands in for the installed one,
    // the only difference from the shipped file.
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = dir.path().join("ferromq.service");
    let built = env!("CARGO_BIN_EXE_ferromq");
    std::fs::write(&unit, shipped.replace(INSTALLED, built)).expect("write the unit");
    verify(&unit);
    // Installed here: the shipped file as written.
    if Path::new(INSTALLED).exists() {
        verify(Path::new(UNIT));
    }
}

#[test]
fn a_mistake_in_the_unit_is_reported_by_verify() {
    if !have_systemd_analyze() {
        return;
    }
    // What the test above relies on: verify speaks up about an unknown key and a missing
    // executable (it only warns about the first, with exit status 0).
    let shipped = std::fs::read_to_string(UNIT).expect("read the unit");
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = dir.path().join("ferromq.service");
    let built = env!("CARGO_BIN_EXE_ferromq");
    let typo = shipped
        .replace(INSTALLED, built)
        .replace("NoNewPrivileges=", "NoNewPrivilege=");
    std::fs::write(&unit, typo).expect("write");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze runs");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unknown key"),
        "{out:?}"
    );
    let missing = shipped.replace(INSTALLED, "/nonexistent/ferromq");
    std::fs::write(&unit, missing).expect("write");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze runs");
    assert!(!out.status.success(), "{out:?}");
}
