//! Layer 2 of the health check: the device's own figures, read from `/proc`, `/sys` and
//! `statvfs`. Every reader takes its root (or path) as an argument, so tests hand it a fake
//! `/proc` and `/sys` tree; a figure that cannot be read is `None` (unknown), never zero.
//!
//! - CPU: whole-device busy share between two samples of `/proc/stat`'s `cpu` line (idle and
//!   iowait count as idle), so the first sample has none.
//! - Memory: `MemTotal − MemAvailable` over `MemTotal` from `/proc/meminfo`.
//! - Temperature: the hottest `/sys/class/thermal/thermal_zone*/temp` (millidegrees); a zone
//!   reading outside −100…200 °C is a broken sensor and is left out.
//! - Throttling: the Raspberry Pi firmware's `get_throttled` flags when that file exists
//!   (bits 0–3: under-voltage, frequency capped, throttled, soft temperature limit, all "now");
//!   otherwise whether a zone is at or above one of its `passive` trip points; unknown when
//!   neither exists.
//! - Disk: free space for unprivileged users (MiB) and used share (as `df` computes it) of the
//!   data directory's filesystem, from `statvfs`.

use std::path::{Path, PathBuf};

/// Where the Raspberry Pi firmware driver publishes its throttle flags, under the sys root.
pub const THROTTLED_PATH: &str = "devices/platform/soc/soc:firmware/get_throttled";

/// The "now" bits of `get_throttled`: under-voltage, ARM frequency capped, throttled, soft
/// temperature limit active. (Bits 16–19 are the same since boot and say nothing about now.)
const THROTTLED_NOW_MASK: u32 = 0xF;

/// The coldest and hottest plausible zone reading, millidegrees Celsius.
const ZONE_RANGE_MC: std::ops::RangeInclusive<i64> = -100_000..=200_000;

/// Most thermal zones and trip points read per sample (a device has a handful).
const MAX_ZONES: usize = 64;
const MAX_TRIPS: usize = 16;

/// Layer 2 input: one system sample. None where the value could not be read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SystemSample {
    /// CPU use since the previous sample (percent).
    pub cpu_percent: Option<f64>,
    /// Memory in use (percent of MemTotal, from MemAvailable).
    pub memory_percent: Option<f64>,
    /// Disk in use on the data directory's filesystem (percent, as `df` computes it).
    pub disk_percent: Option<f64>,
    /// Free space for unprivileged users on the data directory's filesystem, MiB.
    pub disk_free_mb: Option<u64>,
    /// The hottest thermal zone (degrees Celsius).
    pub temperature_celsius: Option<f64>,
    /// Whether the device is throttled now (see the module documentation).
    pub throttled: Option<bool>,
}

/// Reads the system layer from `/proc`, `/sys` and `statvfs`.
#[derive(Debug)]
pub struct SystemProbe {
    proc_root: PathBuf,
    sys_root: PathBuf,
    disk_path: PathBuf,
    prev_cpu: Option<(u64, u64)>,
}

impl SystemProbe {
    /// A probe reading from the given roots; `disk_path` is the data directory.
    pub fn new(proc_root: &Path, sys_root: &Path, disk_path: &Path) -> SystemProbe {
        SystemProbe {
            proc_root: proc_root.to_path_buf(),
            sys_root: sys_root.to_path_buf(),
            disk_path: disk_path.to_path_buf(),
            prev_cpu: None,
        }
    }

    /// Takes one sample. CPU use needs two samples, so the first has none.
    pub fn sample(&mut self) -> SystemSample {
        let cpu = read_small(&self.proc_root.join("stat")).and_then(|t| parse_proc_stat(&t));
        let cpu_percent = match (self.prev_cpu, cpu) {
            (Some((idle0, total0)), Some((idle1, total1))) if total1 > total0 => {
                let busy = (total1 - total0).saturating_sub(idle1.saturating_sub(idle0));
                Some(busy as f64 * 100.0 / (total1 - total0) as f64)
            }
            _ => None,
        };
        if cpu.is_some() {
            self.prev_cpu = cpu;
        }
        let memory_percent =
            read_small(&self.proc_root.join("meminfo")).and_then(|t| parse_meminfo(&t));
        let thermal = self.sys_root.join("class/thermal");
        let zones = read_zones(&thermal);
        let (disk_percent, disk_free_mb) = disk_figures(&self.disk_path);
        SystemSample {
            cpu_percent,
            memory_percent,
            disk_percent,
            disk_free_mb,
            temperature_celsius: zones
                .iter()
                .map(|z| z.temp_mc as f64 / 1000.0)
                .reduce(f64::max),
            throttled: throttled(&self.sys_root, &zones),
        }
    }
}

/// Reads a small pseudo-file (at most 64 KiB), None when unreadable.
pub(crate) fn read_small(path: &Path) -> Option<String> {
    use std::io::Read;
    let f = std::fs::File::open(path).ok()?;
    let mut s = String::new();
    f.take(64 * 1024).read_to_string(&mut s).ok()?;
    Some(s)
}

/// (idle, total) jiffies from the `cpu` line of `/proc/stat`.
pub fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let vals: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<Vec<u64>>>()?;
    if vals.len() < 4 {
        return None;
    }
    // idle + iowait count as idle time.
    let idle = vals[3] + vals.get(4).copied().unwrap_or(0);
    let total = vals.iter().take(8).sum();
    Some((idle, total))
}

/// Memory in use (percent) from `/proc/meminfo`'s MemTotal and MemAvailable.
pub fn parse_meminfo(text: &str) -> Option<f64> {
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let total = field("MemTotal:")?;
    let avail = field("MemAvailable:")?;
    if total == 0 {
        return None;
    }
    Some(total.saturating_sub(avail) as f64 * 100.0 / total as f64)
}

/// Whether `get_throttled`'s text (`throttled=0x50005` from vcgencmd, or the sysfs form
/// `50005`, hex either way) says the device is throttled now.
pub fn parse_throttled(text: &str) -> Option<bool> {
    let t = text.trim();
    let t = t.strip_prefix("throttled=").unwrap_or(t);
    let t = t.strip_prefix("0x").unwrap_or(t);
    let bits = u32::from_str_radix(t, 16).ok()?;
    Some(bits & THROTTLED_NOW_MASK != 0)
}

/// (used percent, free MiB for unprivileged users) of the filesystem holding `path`.
fn disk_figures(path: &Path) -> (Option<f64>, Option<u64>) {
    let Ok(st) = nix::sys::statvfs::statvfs(path) else {
        return (None, None);
    };
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    let (blocks, free, avail, frag) = (
        st.blocks() as u64,
        st.blocks_free() as u64,
        st.blocks_available() as u64,
        st.fragment_size() as u64,
    );
    let used = blocks.saturating_sub(free);
    let denom = used + avail;
    let percent = (denom > 0).then(|| used as f64 * 100.0 / denom as f64);
    let free_mb = (frag > 0).then(|| avail.saturating_mul(frag) / (1024 * 1024));
    (percent, free_mb)
}

/// One thermal zone: its temperature and its passive trip points (millidegrees).
#[derive(Debug, Clone, PartialEq)]
struct Zone {
    temp_mc: i64,
    passive_mc: Vec<i64>,
}

/// The readable `thermal_zone*` under `dir` (at most [`MAX_ZONES`]), broken sensors left out.
fn read_zones(dir: &Path) -> Vec<Zone> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("thermal_zone"))
        .take(MAX_ZONES)
        .filter_map(|e| {
            let zone = e.path();
            let temp_mc = read_small(&zone.join("temp"))?.trim().parse::<i64>().ok()?;
            if !ZONE_RANGE_MC.contains(&temp_mc) {
                return None;
            }
            let passive_mc = (0..MAX_TRIPS)
                .filter(|k| {
                    read_small(&zone.join(format!("trip_point_{k}_type")))
                        .is_some_and(|t| t.trim() == "passive")
                })
                .filter_map(|k| {
                    read_small(&zone.join(format!("trip_point_{k}_temp")))?
                        .trim()
                        .parse::<i64>()
                        .ok()
                })
                .filter(|t| *t > 0)
                .collect();
            Some(Zone {
                temp_mc,
                passive_mc,
            })
        })
        .collect()
}

/// The firmware's flags when present; otherwise whether a zone reached a passive trip point;
/// unknown when the device has neither.
fn throttled(sys_root: &Path, zones: &[Zone]) -> Option<bool> {
    if let Some(flag) = read_small(&sys_root.join(THROTTLED_PATH)).and_then(|t| parse_throttled(&t))
    {
        return Some(flag);
    }
    let with_trips: Vec<&Zone> = zones.iter().filter(|z| !z.passive_mc.is_empty()).collect();
    if with_trips.is_empty() {
        return None;
    }
    Some(
        with_trips
            .iter()
            .any(|z| z.passive_mc.iter().any(|trip| z.temp_mc >= *trip)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tree {
        _tmp: tempfile::TempDir,
        proc_root: PathBuf,
        sys_root: PathBuf,
        data: PathBuf,
    }

    fn tree() -> Tree {
        let tmp = tempfile::tempdir().unwrap();
        let proc_root = tmp.path().join("proc");
        let sys_root = tmp.path().join("sys");
        let data = tmp.path().join("data");
        for d in [&proc_root, &sys_root, &data] {
            std::fs::create_dir_all(d).unwrap();
        }
        Tree {
            proc_root,
            sys_root,
            data,
            _tmp: tmp,
        }
    }

    fn zone(t: &Tree, n: u32, temp: &str, trips: &[(&str, &str)]) {
        let z = t.sys_root.join(format!("class/thermal/thermal_zone{n}"));
        std::fs::create_dir_all(&z).unwrap();
        std::fs::write(z.join("temp"), temp).unwrap();
        for (k, (kind, at)) in trips.iter().enumerate() {
            std::fs::write(z.join(format!("trip_point_{k}_type")), kind).unwrap();
            std::fs::write(z.join(format!("trip_point_{k}_temp")), at).unwrap();
        }
    }

    #[test]
    fn an_empty_tree_knows_nothing_but_the_disk() {
        let t = tree();
        let s = SystemProbe::new(&t.proc_root, &t.sys_root, &t.data).sample();
        assert_eq!(s.cpu_percent, None);
        assert_eq!(s.memory_percent, None);
        assert_eq!(s.temperature_celsius, None);
        assert_eq!(s.throttled, None);
        // The data directory is real, so statvfs answers.
        assert!(s.disk_free_mb.is_some());
        let used = s.disk_percent.unwrap();
        assert!((0.0..=100.0).contains(&used), "{used}");
    }

    #[test]
    fn the_hottest_sane_zone_wins_and_broken_sensors_are_left_out() {
        let t = tree();
        zone(&t, 0, "45000\n", &[]);
        zone(&t, 1, "71250\n", &[]);
        // A disconnected sensor reads absurd values; it must not become the hottest.
        zone(&t, 2, "-273000\n", &[]);
        zone(&t, 3, "999999\n", &[]);
        zone(&t, 4, "not a number\n", &[]);
        let s = SystemProbe::new(&t.proc_root, &t.sys_root, &t.data).sample();
        assert_eq!(s.temperature_celsius, Some(71.25));
        // No zone has a passive trip point and there is no firmware file: unknown.
        assert_eq!(s.throttled, None);
    }

    #[test]
    fn a_zone_at_its_passive_trip_point_is_throttling() {
        let t = tree();
        zone(
            &t,
            0,
            "79000\n",
            &[("critical\n", "90000\n"), ("passive\n", "80000\n")],
        );
        let mut p = SystemProbe::new(&t.proc_root, &t.sys_root, &t.data);
        assert_eq!(p.sample().throttled, Some(false));
        zone(&t, 0, "80000\n", &[]);
        assert_eq!(p.sample().throttled, Some(true));
        // Only passive trips count: a zone with hot and critical trips alone says nothing.
        zone(
            &t,
            0,
            "95000\n",
            &[("critical\n", "90000\n"), ("hot\n", "85000\n")],
        );
        assert_eq!(p.sample().throttled, None);
    }

    #[test]
    fn the_firmware_flags_win_over_trip_points() {
        let t = tree();
        zone(&t, 0, "85000\n", &[("passive\n", "80000\n")]);
        let fw = t.sys_root.join(THROTTLED_PATH);
        std::fs::create_dir_all(fw.parent().unwrap()).unwrap();
        // Only "since boot" bits set: not throttled now, whatever the zone says.
        std::fs::write(&fw, "50000\n").unwrap();
        let mut p = SystemProbe::new(&t.proc_root, &t.sys_root, &t.data);
        assert_eq!(p.sample().throttled, Some(false));
        std::fs::write(&fw, "0x4\n").unwrap();
        assert_eq!(p.sample().throttled, Some(true));
        assert_eq!(parse_throttled("throttled=0x50005"), Some(true));
        assert_eq!(parse_throttled("0x0"), Some(false));
        assert_eq!(parse_throttled("garbage"), None);
        // Garbage in the file falls back to the trip points.
        std::fs::write(&fw, "garbage\n").unwrap();
        assert_eq!(p.sample().throttled, Some(true));
    }

    #[test]
    fn cpu_and_memory_come_from_proc() {
        let t = tree();
        std::fs::write(
            t.proc_root.join("meminfo"),
            "MemTotal: 2000 kB\nMemFree: 100 kB\nMemAvailable: 200 kB\n",
        )
        .unwrap();
        std::fs::write(t.proc_root.join("stat"), "cpu  0 0 0 1000 0 0 0 0\n").unwrap();
        let mut p = SystemProbe::new(&t.proc_root, &t.sys_root, &t.data);
        let s = p.sample();
        assert_eq!(s.memory_percent, Some(90.0));
        assert_eq!(s.cpu_percent, None);
        // 400 jiffies more, 100 of them idle or iowait: 75 % busy.
        std::fs::write(t.proc_root.join("stat"), "cpu  200 0 100 1050 50 0 0 0\n").unwrap();
        assert_eq!(p.sample().cpu_percent, Some(75.0));
        // A meminfo without MemAvailable (very old kernels) is unknown, not zero.
        std::fs::write(t.proc_root.join("meminfo"), "MemTotal: 2000 kB\n").unwrap();
        assert_eq!(p.sample().memory_percent, None);
    }
}
