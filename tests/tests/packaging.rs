//! The Debian packages `floed` and `floe`, built with cargo-deb and installed the way Debian
//! installs them: `dpkg --root` into a throwaway root, with the maintainer scripts run for real
//! (`--force-script-chrootless`, so they see `DPKG_ROOT` and apply `systemd-sysusers` and
//! `systemd-tmpfiles` to that root). Then the files, the users, the enabled units
//! (`systemd-analyze verify`), the conffile (it parses with floed's own config loader and
//! documents every key with its real default), stripped binaries, removal and purge, and
//! lintian.
//!
//! The packages are built for the host architecture with the `ci-package` profile (release
//! settings without whole-program LTO, so CI builds them in minutes); `cross/package.sh` builds
//! the shipped packages from the real release profile for arm64, armhf and amd64.
//!
//! Skips, saying why, where a tool is missing; under `CI=true` that fails instead.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // A test fails loudly on any broken precondition.

use floe_runtime::config::{Config, HealthConfig, LinkSettings, TrialConfig};
use floe_wire::artifact::native_arch;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const TOOLS: [&str; 10] = [
    "cargo-deb",
    "dpkg",
    "dpkg-deb",
    "dpkg-query",
    "lintian",
    "systemd-sysusers",
    "systemd-tmpfiles",
    "systemd-analyze",
    "deb-systemd-helper",
    "readelf",
];

/// False (after saying why) when a tool is missing and this is not CI; panics under CI.
fn tools_present(test: &str) -> bool {
    let missing: Vec<&str> = TOOLS
        .iter()
        .copied()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: missing under CI: {missing:?} (.ci/run installs them)"
    );
    eprintln!(
        "SKIP {test}: missing {missing:?} (cargo install cargo-deb --locked; apt-get install lintian dpkg-dev)"
    );
    false
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).unwrap()
}

/// The target directory this test binary was built into (`<target>/<profile>/deps/<test>`).
fn target_dir() -> PathBuf {
    std::env::current_exe()
        .unwrap()
        .ancestors()
        .nth(3)
        .unwrap()
        .to_path_buf()
}

/// The two packages, built once per test process.
struct Debs {
    floed: PathBuf,
    floe: PathBuf,
}

fn debs() -> &'static Debs {
    static DEBS: OnceLock<Debs> = OnceLock::new();
    DEBS.get_or_init(|| {
        let out = target_dir().join("packaging-test");
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).unwrap();
        for package in ["floe-runtime", "floe-coordinator"] {
            run(floe_tests::cargo_command()
                .args([
                    "deb",
                    "--locked",
                    "--strip",
                    "-p",
                    package,
                    "--profile",
                    "ci-package",
                ])
                .arg("--output")
                .arg(&out)
                .env("CARGO_TARGET_DIR", target_dir()));
        }
        let find = |name: &str| {
            let prefix = format!("{name}_{}-1_", env!("CARGO_PKG_VERSION"));
            std::fs::read_dir(&out)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| {
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with(&prefix)
                })
                .unwrap_or_else(|| panic!("no {prefix}*.deb in {}", out.display()))
        };
        Debs {
            floed: find("floed"),
            floe: find("floe"),
        }
    })
}

fn host_arch() -> String {
    stdout(Command::new("dpkg").arg("--print-architecture"))
        .trim()
        .to_string()
}

/// An empty dpkg root: the database files dpkg needs and nothing else.
fn fresh_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    for dir in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
        "var/log",
        "etc",
    ] {
        std::fs::create_dir_all(root.path().join(dir)).unwrap();
    }
    std::fs::write(root.path().join("var/lib/dpkg/status"), "").unwrap();
    std::fs::write(root.path().join("var/lib/dpkg/available"), "").unwrap();
    root
}

/// `dpkg --root ROOT` with the maintainer scripts run outside a chroot (they get `DPKG_ROOT`).
/// The root has no libc or systemd package, so dependencies are not checked.
fn dpkg(root: &Path) -> Command {
    let mut cmd = Command::new("dpkg");
    cmd.arg(format!("--root={}", root.display()))
        .args([
            "--force-script-chrootless",
            "--force-depends",
            "--force-not-root",
        ])
        .arg(format!("--log={}", root.join("var/log/dpkg.log").display()));
    cmd
}

fn install(root: &Path, debs: &[&Path]) {
    run(dpkg(root).arg("--install").args(debs));
}

fn passwd_entry(root: &Path, user: &str) -> Vec<String> {
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    passwd
        .lines()
        .find(|l| l.starts_with(&format!("{user}:")))
        .unwrap_or_else(|| panic!("no user {user} in\n{passwd}"))
        .split(':')
        .map(str::to_string)
        .collect()
}

#[test]
fn control_fields_name_the_package_version_arch_and_dependencies() {
    if !tools_present("control_fields") {
        return;
    }
    let debs = debs();
    for (deb, name) in [(&debs.floed, "floed"), (&debs.floe, "floe")] {
        let field = |f: &str| {
            stdout(Command::new("dpkg-deb").args(["--field"]).arg(deb).arg(f))
                .trim()
                .to_string()
        };
        assert_eq!(field("Package"), name);
        assert_eq!(field("Version"), format!("{}-1", env!("CARGO_PKG_VERSION")));
        assert_eq!(field("Architecture"), host_arch());
        let depends = field("Depends");
        for needed in ["libc6", "init-system-helpers", "systemd"] {
            assert!(
                depends.contains(needed),
                "{name} Depends lacks {needed}: {depends}"
            );
        }
        // The Debian changelog's latest entry is this version (packaging/<name>.changelog
        // must be bumped with the workspace version).
        let dir = tempfile::tempdir().unwrap();
        run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dir.path()));
        let changelog = stdout(
            Command::new("gzip").arg("-dc").arg(
                dir.path()
                    .join(format!("usr/share/doc/{name}/changelog.Debian.gz")),
            ),
        );
        let first = changelog.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(&format!("{name} ({}-1) ", env!("CARGO_PKG_VERSION"))),
            "{name}'s changelog starts with {first:?}"
        );
    }
}

#[test]
fn packages_install_the_users_directories_units_and_conffile() {
    if !tools_present("packages_install") {
        return;
    }
    let debs = debs();
    let root = fresh_root();
    let r = root.path();
    // Both on one machine: no file belongs to both packages.
    install(r, &[&debs.floed, &debs.floe]);

    // The binaries and the files around them.
    for (path, mode) in [
        ("usr/bin/floed", 0o755),
        ("usr/bin/floe", 0o755),
        ("usr/lib/systemd/system/floed.service", 0o644),
        ("usr/lib/systemd/system/floe.service", 0o644),
        ("usr/lib/sysusers.d/floe.conf", 0o644),
        ("usr/lib/sysusers.d/floe-coordinator.conf", 0o644),
        ("usr/lib/tmpfiles.d/floe.conf", 0o644),
        ("usr/lib/tmpfiles.d/floe-coordinator.conf", 0o644),
        ("etc/floe/floed.toml", 0o644),
        ("usr/share/doc/floed/copyright", 0o644),
        ("usr/share/doc/floed/examples/temperature-alert.json", 0o644),
    ] {
        let meta = std::fs::metadata(r.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(meta.mode() & 0o777, mode, "{path}");
    }
    for (unit, source) in [
        ("floed.service", "systemd/floed.service"),
        ("floe.service", "systemd/floe.service"),
    ] {
        assert_eq!(
            std::fs::read(r.join("usr/lib/systemd/system").join(unit)).unwrap(),
            std::fs::read(floe_tests::workspace_root().join(source)).unwrap(),
            "{unit} is shipped as written"
        );
    }

    // The maintainer scripts ran sysusers: the users, with no login, and floed in the groups
    // sensors and GPIO need.
    let floe = passwd_entry(r, "floe");
    assert_eq!(floe[5], "/var/lib/floe");
    assert_eq!(floe[6], "/usr/sbin/nologin");
    let coordinator = passwd_entry(r, "floe-coordinator");
    assert_eq!(coordinator[5], "/var/lib/floe-coordinator");
    let group = std::fs::read_to_string(r.join("etc/group")).unwrap();
    for g in ["gpio", "i2c", "spi", "dialout", "iio"] {
        assert!(
            group
                .lines()
                .any(|l| l.starts_with(&format!("{g}:")) && l.ends_with("floe")),
            "floe is not in group {g}:\n{group}"
        );
    }

    // … and tmpfiles: the data directories, each its user's alone.
    for (dir, user, mode) in [
        ("var/lib/floe", &floe, 0o750),
        ("var/lib/floe-coordinator", &coordinator, 0o700),
    ] {
        let meta = std::fs::metadata(r.join(dir)).unwrap_or_else(|e| panic!("{dir}: {e}"));
        assert_eq!(meta.mode() & 0o777, mode, "{dir}");
        assert_eq!(
            meta.uid().to_string(),
            user[2],
            "{dir} belongs to {}",
            user[0]
        );
    }

    // Both units are enabled (deb-systemd-helper under DPKG_ROOT) …
    for unit in ["floed.service", "floe.service"] {
        let link = r
            .join("etc/systemd/system/multi-user.target.wants")
            .join(unit);
        assert_eq!(
            std::fs::read_link(&link).unwrap_or_else(|e| panic!("{unit} not enabled: {e}")),
            Path::new("/usr/lib/systemd/system").join(unit)
        );
    }
    // … but floed starts only once configured: its condition is the trust store `floed join`
    // writes, which a fresh install does not have.
    let unit = std::fs::read_to_string(r.join("usr/lib/systemd/system/floed.service")).unwrap();
    assert!(unit.contains("\nConditionPathExists=/var/lib/floe/trust/trust.cbor\n"));
    assert!(!r.join("var/lib/floe/trust").exists());

    // The conffile is registered as one, with its checksum.
    let conffiles = stdout(
        Command::new("dpkg-query")
            .arg(format!("--root={}", r.display()))
            .args(["-W", "-f=${Conffiles}", "floed"]),
    );
    assert!(
        conffiles.trim().starts_with("/etc/floe/floed.toml "),
        "conffiles of floed: {conffiles:?}"
    );

    // The installed units pass systemd's own check, against the installed binaries.
    for unit in ["floed.service", "floe.service"] {
        let text = std::fs::read_to_string(r.join("usr/lib/systemd/system").join(unit)).unwrap();
        let copy = r.join("tmp-verify").join(unit);
        std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
        let bin = r.join("usr/bin");
        std::fs::write(
            &copy,
            text.replace("/usr/bin/", &format!("{}/", bin.display())),
        )
        .unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&copy)
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "systemd-analyze verify {unit}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The installed binaries run.
    for (bin, name) in [("usr/bin/floed", "floed"), ("usr/bin/floe", "floe")] {
        let version = stdout(Command::new(r.join(bin)).arg("--version"));
        assert_eq!(
            version.trim(),
            format!("{name} {}", env!("CARGO_PKG_VERSION"))
        );
    }
    // The device package is built without the laptop demo (its embedded MQTT broker is code a
    // field device never runs): `floed --help` lists no `demo`.
    let help = stdout(Command::new(r.join("usr/bin/floed")).arg("--help"));
    assert!(help.contains("daemon"), "{help}");
    assert!(
        !help.lines().any(|l| l.trim_start().starts_with("demo")),
        "the packaged floed has the demo: {help}"
    );
}

#[test]
fn packaged_binaries_are_stripped() {
    if !tools_present("stripped") {
        return;
    }
    let debs = debs();
    let dir = tempfile::tempdir().unwrap();
    for (deb, bin) in [(&debs.floed, "floed"), (&debs.floe, "floe")] {
        run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dir.path()));
        let path = dir.path().join("usr/bin").join(bin);
        let sections = stdout(Command::new("readelf").arg("-S").arg("-W").arg(&path));
        for section in [".symtab", ".debug_info", ".debug_line"] {
            assert!(
                !sections.contains(section),
                "{bin} in the package still has {section}"
            );
        }
        // The check can fail: the unstripped build has a symbol table.
        let built = target_dir().join("ci-package").join(bin);
        let unstripped = stdout(Command::new("readelf").arg("-S").arg("-W").arg(&built));
        assert!(
            unstripped.contains(".symtab"),
            "{} has no .symtab",
            built.display()
        );
        let size = std::fs::metadata(&path).unwrap().len();
        let deb_size = std::fs::metadata(deb).unwrap().len();
        eprintln!(
            "{bin}: stripped {:.1} MB, package {:.1} MB (ci-package profile)",
            size as f64 / 1e6,
            deb_size as f64 / 1e6
        );
    }
}

/// Every key the parser accepts, read from its own error for an unknown key.
fn accepted_keys(table: &str) -> Vec<String> {
    let text = match table {
        "" => "device_type = \"x\"\nnot_a_key = 1\n".to_string(),
        t => format!("device_type = \"x\"\n[{t}]\nnot_a_key = 1\n"),
    };
    let err = Config::parse(&text, Path::new("probe"), None)
        .unwrap_err()
        .to_string();
    let list = err
        .split("expected one of")
        .nth(1)
        .unwrap_or_else(|| panic!("no key list in {err}"));
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[test]
fn conffile_parses_and_documents_every_key_with_its_default() {
    if !tools_present("conffile") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(&debs().floed)
        .arg(dir.path()));
    let path = dir.path().join("etc/floe/floed.toml");
    let text = std::fs::read_to_string(&path).unwrap();

    // As shipped it loads with floed's own loader: the daemon's defaults, this build's arch.
    let cfg = Config::load(&path, None).unwrap();
    assert_eq!(cfg.device_type, "generic");
    assert_eq!(cfg.arch, native_arch());
    assert_eq!(cfg.data_dir, Path::new("/var/lib/floe"));
    assert_eq!(cfg.trust_store, Path::new("/var/lib/floe/trust"));
    assert_eq!(cfg.trial, TrialConfig::default());
    assert_eq!(cfg.health, HealthConfig::default());
    assert_eq!(cfg.link, LinkSettings::default());
    assert!(cfg.bootstrap_peers.is_empty() && cfg.listen.is_empty());

    // Every key the parser knows is in the file, set or commented.
    for (table, header) in [
        ("", None),
        ("trial", Some("[trial]")),
        ("health", Some("[health]")),
    ] {
        let keys = accepted_keys(table);
        assert!(keys.len() >= 8, "keys of [{table}]: {keys:?}");
        let section: String = match header {
            None => text
                .lines()
                .take_while(|l| !l.starts_with('['))
                .collect::<Vec<_>>()
                .join("\n"),
            Some(h) => text
                .lines()
                .skip_while(|l| *l != h)
                .skip(1)
                .take_while(|l| !l.starts_with('['))
                .collect::<Vec<_>>()
                .join("\n"),
        };
        for key in keys {
            // A table (`[trial]`, `[dev]` …) is documented by its header.
            let set = section
                .lines()
                .any(|l| l.trim_start_matches('#').starts_with(&format!("{key} = ")))
                || text.lines().any(|l| l == format!("[{key}]"));
            assert!(set, "floed.toml does not document `{key}` in [{table}]");
        }
    }

    // Uncommented, every documented value parses, and the documented defaults are the real
    // ones (the examples aside: arch, region, labels, addresses, token).
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.split(" = ").next().is_some_and(is_key) => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let all = Config::parse(&uncommented, Path::new("uncommented"), None).unwrap();
    assert_eq!(all.trial, TrialConfig::default());
    assert_eq!(all.health, HealthConfig::default());
    assert_eq!(all.data_dir, cfg.data_dir);
    assert_eq!(all.trust_store, cfg.trust_store);
    assert_eq!(all.http_listen, cfg.http_listen);
    assert_eq!(all.link.mdns, cfg.link.mdns);
    assert_eq!(all.link.heartbeat_interval, cfg.link.heartbeat_interval);
    assert_eq!(all.link.fetch_timeout, cfg.link.fetch_timeout);
    assert!(all.link.enroll_token.is_some() && !all.bootstrap_peers.is_empty());
}

fn is_key(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c == '_')
}

#[test]
fn remove_keeps_the_conffile_and_purge_keeps_the_device_data() {
    if !tools_present("remove_and_purge") {
        return;
    }
    let root = fresh_root();
    let r = root.path();
    install(r, &[&debs().floed]);
    // The device joined and has state: an edited config and a trust store.
    let conf = r.join("etc/floe/floed.toml");
    let edited = format!(
        "{}\nregion = \"plant-3\"\n",
        std::fs::read_to_string(&conf).unwrap()
    );
    std::fs::write(&conf, &edited).unwrap();
    std::fs::create_dir_all(r.join("var/lib/floe/trust")).unwrap();
    std::fs::write(r.join("var/lib/floe/trust/trust.cbor"), b"keys").unwrap();

    // Reinstalling (an upgrade to the same version) keeps the edited conffile.
    run(dpkg(r)
        .arg("--force-confold")
        .arg("--install")
        .arg(&debs().floed));
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), edited);

    run(dpkg(r).args(["--remove", "floed"]));
    assert!(!r.join("usr/bin/floed").exists());
    assert!(!r.join("usr/lib/systemd/system/floed.service").exists());
    assert_eq!(
        std::fs::read_to_string(&conf).unwrap(),
        edited,
        "remove keeps conffiles"
    );

    run(dpkg(r).args(["--purge", "floed"]));
    assert!(!conf.exists(), "purge deletes the conffile");
    assert!(
        !r.join("etc/systemd/system/multi-user.target.wants/floed.service")
            .exists(),
        "purge forgets the enablement"
    );
    assert!(
        r.join("var/lib/floe/trust/trust.cbor").exists(),
        "purge keeps the device's data"
    );
    // Purged: dpkg reports it not installed, or (newer dpkg) forgets it altogether.
    let query = Command::new("dpkg-query")
        .arg(format!("--root={}", r.display()))
        .args(["-W", "-f=${db:Status-Abbrev}", "floed"])
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&query.stdout).to_string();
    let forgotten = !query.status.success()
        && String::from_utf8_lossy(&query.stderr).contains("no packages found");
    assert!(
        forgotten || status.starts_with("un") || status.starts_with("pn"),
        "status {status:?}: {}",
        String::from_utf8_lossy(&query.stderr)
    );
}

#[test]
fn lintian_finds_no_errors() {
    if !tools_present("lintian") {
        return;
    }
    let debs = debs();
    for deb in [&debs.floed, &debs.floe] {
        let out = Command::new("lintian")
            .args(["--fail-on", "error", "--no-tag-display-limit"])
            .arg(deb)
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        eprintln!("lintian {}:\n{report}", deb.display());
        assert!(
            out.status.success() && !report.lines().any(|l| l.starts_with("E: ")),
            "lintian reports errors for {}:\n{report}{}",
            deb.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
