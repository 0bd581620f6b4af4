//! Java key stores made by the real `keytool` (Debian's JDK) at test time, so that the JKS and
//! JCEKS readers are checked against what Java writes, not against our own idea of the format.
//! Without `keytool` the tests skip with a message, except under CI (`CI` set), where they fail.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `keytool` on PATH, or `None` after printing why the caller skips (panics under CI).
pub fn keytool() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("keytool"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "keytool is missing under CI: install default-jre-headless (.ci/run does)"
        );
        eprintln!(
            "SKIPPED: keytool not found (install a JDK/JRE: apt-get install default-jre-headless)"
        );
    }
    found
}

/// Java's two proprietary store types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreType {
    Jks,
    Jceks,
}

impl StoreType {
    pub fn name(self) -> &'static str {
        match self {
            StoreType::Jks => "JKS",
            StoreType::Jceks => "JCEKS",
        }
    }

    /// The first four bytes Java writes for this type.
    pub fn magic(self) -> [u8; 4] {
        match self {
            StoreType::Jks => [0xfe, 0xed, 0xfe, 0xed],
            StoreType::Jceks => [0xce, 0xce, 0xce, 0xce],
        }
    }
}

/// One `keytool` binary and the type of the stores it writes.
pub struct Keytool {
    pub exe: PathBuf,
    pub store_type: StoreType,
}

impl Keytool {
    /// `None` (after a message) when keytool is not installed.
    pub fn new(store_type: StoreType) -> Option<Keytool> {
        Some(Keytool {
            exe: keytool()?,
            store_type,
        })
    }

    fn run(&self, args: &[&str]) {
        let out = Command::new(&self.exe)
            .args(args)
            .args(["-storetype", self.store_type.name()])
            .output()
            .expect("run keytool");
        assert!(
            out.status.success(),
            "keytool {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `keytool -genkeypair`: a self-signed certificate for `localhost` / 127.0.0.1 with subject
    /// `CN=<cn>`, key algorithm `key_alg` (`RSA`, `EC`, or `EC:<curve>` for keytool's
    /// `-groupname`, e.g. `EC:secp521r1`), under `alias` in `store` (created when missing), the
    /// key protected with `key_pass`.
    pub fn genkeypair(
        &self,
        store: &Path,
        alias: &str,
        cn: &str,
        key_alg: &str,
        store_pass: &str,
        key_pass: &str,
    ) {
        let dname = format!("CN={cn}");
        let (key_alg, curve) = match key_alg.split_once(':') {
            Some((alg, curve)) => (alg, Some(curve)),
            None => (key_alg, None),
        };
        let mut args = vec![
            "-genkeypair",
            "-keystore",
            path(store),
            "-alias",
            alias,
            "-keyalg",
            key_alg,
            "-dname",
            &dname,
            "-ext",
            "SAN=dns:localhost,ip:127.0.0.1",
            "-validity",
            "30",
            "-storepass",
            store_pass,
            "-keypass",
            key_pass,
        ];
        if key_alg == "RSA" {
            args.extend(["-keysize", "2048"]);
        }
        if let Some(curve) = curve {
            args.extend(["-groupname", curve]);
        }
        self.run(&args);
        self.assert_magic(store);
    }

    /// `keytool -importcert -noprompt`: `pem` as a trusted certificate entry `alias`.
    pub fn import_trusted(&self, store: &Path, alias: &str, pem: &str, store_pass: &str) {
        let file = store.with_extension(format!("{alias}.crt"));
        std::fs::write(&file, pem).expect("write certificate");
        self.run(&[
            "-importcert",
            "-noprompt",
            "-keystore",
            path(store),
            "-alias",
            alias,
            "-file",
            path(&file),
            "-storepass",
            store_pass,
        ]);
        self.assert_magic(store);
    }

    /// `keytool -delete`: remove entry `alias` (the store is rewritten in place).
    pub fn delete(&self, store: &Path, alias: &str, store_pass: &str) {
        self.run(&[
            "-delete",
            "-keystore",
            path(store),
            "-alias",
            alias,
            "-storepass",
            store_pass,
        ]);
        self.assert_magic(store);
    }

    /// The DER certificate of entry `alias` (`keytool -exportcert`).
    pub fn export_cert(&self, store: &Path, alias: &str, store_pass: &str) -> Vec<u8> {
        let file = store.with_extension(format!("{alias}.der"));
        self.run(&[
            "-exportcert",
            "-keystore",
            path(store),
            "-alias",
            alias,
            "-file",
            path(&file),
            "-storepass",
            store_pass,
        ]);
        std::fs::read(&file).expect("read exported certificate")
    }

    /// The store really is in the type asked for (a modern keytool writes PKCS#12 unless told).
    pub fn assert_magic(&self, store: &Path) {
        let bytes = std::fs::read(store).expect("read store");
        assert_eq!(
            bytes.get(..4),
            Some(&self.store_type.magic()[..]),
            "{} is not a {} store",
            store.display(),
            self.store_type.name()
        );
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}
