//! Small durable-write helpers: write to a temp file, fsync, rename, fsync the directory.
//!
//! A crash at any point leaves either the old file or the new one, never a torn one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temp path beside `target` that no other writer in this or another process uses.
pub fn temp_path_for(target: &Path) -> std::path::PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = target
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// Makes `dir` (created if missing) private to its owner: mode 0700, whatever it was before.
/// Data directories hold keys, tokens and flows; a directory someone created earlier with 0755
/// must not stay readable by every local user.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// Makes a SQLite database file private (mode 0600) before it is opened: created empty with
/// 0600 if missing, set to 0600 if it exists, and the same for its `-wal` and `-shm` files if
/// they exist (SQLite creates those with the database file's mode).
pub fn private_database(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    drop(
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?,
    );
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        match fs::set_permissions(Path::new(&side), fs::Permissions::from_mode(0o600)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Fsyncs a directory so a rename inside it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `target` atomically and durably, with file mode `mode`. With
/// `overwrite` false an existing target is refused (and nothing is written).
pub fn write_atomic(target: &Path, bytes: &[u8], mode: u32, overwrite: bool) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = temp_path_for(target);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        if overwrite {
            fs::rename(&tmp, target)?;
        } else {
            // A hard link fails if the target exists, unlike rename.
            fs::hard_link(&tmp, target)?;
            fs::remove_file(&tmp)?;
        }
        let parent = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        sync_dir(parent)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
