//! How nodes read device files. Every read of sysfs or a device attribute goes through
//! [`SysfsReader`], so that tests can put a reader in front that fails the way real drivers fail.

use std::io;
use std::path::Path;

/// Reads small text files from sysfs or elsewhere. The engine reads devices through this trait
/// so that tests can put a reader in front that fails the way real drivers fail (EIO).
pub trait SysfsReader: Send + Sync + std::fmt::Debug + 'static {
    /// Reads the whole file as text.
    fn read_to_string(&self, path: &Path) -> io::Result<String>;
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsReader;

impl SysfsReader for FsReader {
    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        // Device attributes are a few bytes; refuse anything large instead of reading it.
        use std::io::Read;
        let mut s = String::new();
        std::fs::File::open(path)?
            .take(4096)
            .read_to_string(&mut s)?;
        Ok(s)
    }
}
