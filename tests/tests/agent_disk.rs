//! Storage faults: a full disk (a small tmpfs) and a read-only data directory. Each ends in a
//! clean error naming the problem, the old slot intact and still running, and a database that
//! still works. Mounting needs root; without it the tests skip, saying why.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // A test fails loudly on any broken precondition.

use std::path::{Path, PathBuf};
use std::process::Command;

use floe_tests::agent::*;

/// A tmpfs mount, unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Option<Mount> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: mounting a tmpfs needs root");
            return None;
        }
        std::fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .ok()?;
        if !st.success() {
            eprintln!("SKIP: mount -t tmpfs failed (no mount privilege in this sandbox)");
            return None;
        }
        Some(Mount(at.to_path_buf()))
    }

    fn remount(&self, mode: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn full_disk_fails_cleanly_and_keeps_the_old_slot() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(_m) = Mount::tmpfs(&tmp.path().join("mnt"), "3m") else {
        return;
    };
    let data = tmp.path().join("mnt/data");
    let cfg = config(tmp.path(), &data, 0);
    let out = install(&cfg, &stage(tmp.path(), "1.0", &ticking_flow("v1"), &[]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let big = stage(
        tmp.path(),
        "2.0",
        &ticking_flow("v2"),
        &[("files/model.bin", vec![1u8; 4 << 20])],
    );
    let out = install(&cfg, &big);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let st = status(&cfg);
    assert_eq!(st["active"], "blue");
    assert_eq!(st["slots"][0]["verified"], "ok");
    assert_eq!(st["database"], "ok");
    assert!(temp_leftovers(&data).is_empty());
    assert!(
        st["audit"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["action"] == "stage" && a["outcome"] == "failed")
    );
    // The device is still usable: a version that fits installs.
    let out = install(&cfg, &stage(tmp.path(), "3.0", &ticking_flow("v3"), &[]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(status(&cfg)["active"], "green");
}

#[test]
fn read_only_data_dir_fails_cleanly_and_status_still_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(m) = Mount::tmpfs(&tmp.path().join("mnt"), "16m") else {
        return;
    };
    let data = tmp.path().join("mnt/data");
    let cfg = config(tmp.path(), &data, 0);
    assert!(
        install(&cfg, &stage(tmp.path(), "1.0", &ticking_flow("v1"), &[]))
            .status
            .success()
    );
    m.remount("ro");
    let out = install(&cfg, &stage(tmp.path(), "2.0", &ticking_flow("v2"), &[]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let st = status(&cfg);
    assert_eq!(st["active"], "blue");
    assert_eq!(st["slots"][0]["verified"], "ok");
    assert_eq!(st["database"], "ok");
    m.remount("rw");
    let out = install(&cfg, &stage(tmp.path(), "2.0", &ticking_flow("v2"), &[]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
