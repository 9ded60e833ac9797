//! `dht`: a DHT11/DHT22 temperature and humidity sensor read through the Linux IIO driver
//! (`dht11` kernel module, which serves both models): `in_temp_input` in milli-°C and
//! `in_humidityrelative_input` in milli-%RH under the device directory.
//!
//! The one-wire protocol of these sensors is timing-sensitive, and the driver reports a read
//! that lost bits as `EIO` (or `ETIMEDOUT` when the sensor did not answer). Such reads are
//! normal and are retried a few times with a short pause; any other error (a missing device)
//! fails at once. `simulate` replaces the device with a deterministic waveform, so demos and
//! tests give the same readings every run: the temperature swings between 22 and 34 °C over
//! one minute, crossing the example flow's threshold of 30 °C.

use super::at_least;
use crate::task::NodeIo;
use crate::task::{NodeError, SysfsReader};
use serde::Deserialize;
use serde_json::json;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::MissedTickBehavior;

/// `EIO` on Linux: the driver lost bits of the reply.
const EIO: i32 = 5;
/// `ETIMEDOUT` on Linux: the sensor did not answer in time.
const ETIMEDOUT: i32 = 110;
/// Pause before the first retry; it grows linearly with the attempt.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// One waveform period of the simulation.
const SIM_PERIOD_MS: u64 = 60_000;

/// Which sensor it is; they differ in range and minimum read interval.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum DhtModel {
    /// 0–50 °C, 20–90 %RH, one read per second at most.
    Dht11,
    /// −40–80 °C, 0–100 %RH, one read every two seconds at most.
    #[default]
    Dht22,
}

impl DhtModel {
    fn min_interval_ms(self) -> u64 {
        match self {
            DhtModel::Dht11 => 1000,
            DhtModel::Dht22 => 2000,
        }
    }

    /// Plausible ranges (with some margin over the datasheet) to reject garbage reads.
    fn plausible(self, t: f64, h: f64) -> bool {
        let (tlo, thi) = match self {
            DhtModel::Dht11 => (-20.0, 60.0),
            DhtModel::Dht22 => (-40.0, 80.0),
        };
        (tlo..=thi).contains(&t) && (0.0..=100.0).contains(&h)
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct DhtConfig {
    #[serde(default)]
    model: DhtModel,
    #[serde(default = "default_device")]
    device: PathBuf,
    /// Milliseconds (compiled).
    #[serde(default = "default_interval")]
    interval: u64,
    #[serde(default = "default_retries")]
    retries: u32,
    #[serde(default = "default_topic")]
    topic: String,
    #[serde(default)]
    simulate: bool,
}

fn default_device() -> PathBuf {
    PathBuf::from("/sys/bus/iio/devices/iio:device0")
}
fn default_interval() -> u64 {
    2000
}
fn default_retries() -> u32 {
    3
}
fn default_topic() -> String {
    "dht".to_string()
}

/// One reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DhtReading {
    /// Degrees Celsius.
    pub temperature: f64,
    /// Percent relative humidity.
    pub humidity: f64,
}

/// The simulated reading number `sample` for a node polling every `interval_ms`: a sine over one
/// minute, 28 ± 6 °C and 55 ∓ 10 %RH, rounded to the sensor's 0.1 resolution.
pub fn simulated_reading(sample: u64, interval_ms: u64) -> DhtReading {
    let t_ms = sample.wrapping_mul(interval_ms) % SIM_PERIOD_MS;
    let phase = std::f64::consts::TAU * (t_ms as f64) / (SIM_PERIOD_MS as f64);
    let round = |x: f64| (x * 10.0).round() / 10.0;
    DhtReading {
        temperature: round(28.0 + 6.0 * phase.sin()),
        humidity: round(55.0 - 10.0 * phase.sin()),
    }
}

fn parse_milli(text: &str, path: &Path) -> Result<f64, NodeError> {
    text.trim()
        .parse::<i64>()
        .map(|m| m as f64 / 1000.0)
        .map_err(|_| {
            NodeError::Read(format!(
                "{}: expected an integer in thousandths, got {:?}",
                path.display(),
                text.trim().chars().take(40).collect::<String>()
            ))
        })
}

fn retryable(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(EIO | ETIMEDOUT))
}

/// Reads one attribute file, retrying driver read failures up to `retries` times. Returns the
/// value and the number of retries it took.
pub(crate) async fn read_attr(
    reader: Arc<dyn SysfsReader>,
    path: PathBuf,
    retries: u32,
) -> Result<(f64, u32), NodeError> {
    let mut attempt = 0u32;
    loop {
        let r = reader.clone();
        let p = path.clone();
        let got = match tokio::task::spawn_blocking(move || r.read_to_string(&p)).await {
            Ok(got) => got,
            Err(source) => return Err(NodeError::ReaderTask { path, source }),
        };
        match got {
            Ok(text) => return parse_milli(&text, &path).map(|v| (v, attempt)),
            Err(e) if retryable(&e) && attempt < retries => {
                attempt += 1;
                tracing::debug!(path = %path.display(), attempt, error = %e, "dht read failed; retrying");
                tokio::time::sleep(RETRY_PAUSE * attempt).await;
            }
            Err(source) => {
                return Err(NodeError::ReadRetried {
                    path,
                    retries: attempt,
                    source,
                });
            }
        }
    }
}

/// Reads temperature and humidity from an IIO device directory.
pub(crate) async fn read_device(
    reader: Arc<dyn SysfsReader>,
    device: &Path,
    model: DhtModel,
    retries: u32,
) -> Result<DhtReading, NodeError> {
    let (t, _) = read_attr(reader.clone(), device.join("in_temp_input"), retries).await?;
    let (h, _) = read_attr(reader, device.join("in_humidityrelative_input"), retries).await?;
    if !model.plausible(t, h) {
        return Err(NodeError::Read(format!(
            "{}: implausible reading {t} °C, {h} %RH for {model:?}",
            device.display()
        )));
    }
    Ok(DhtReading {
        temperature: t,
        humidity: h,
    })
}

/// The running dht node.
#[derive(Debug)]
pub(crate) struct DhtNode {
    model: DhtModel,
    device: PathBuf,
    interval_ms: u64,
    retries: u32,
    topic: Arc<str>,
    simulate: bool,
}

impl DhtNode {
    pub(crate) fn new(cfg: DhtConfig) -> Result<Self, String> {
        if cfg.simulate {
            // The simulation has no sensor limits; demos poll faster than a real DHT allows.
            at_least("interval", cfg.interval, 10)?;
        } else {
            at_least("interval", cfg.interval, cfg.model.min_interval_ms())?;
        }
        if cfg.retries > 10 {
            return Err(format!(
                "retries: {} is above the maximum of 10",
                cfg.retries
            ));
        }
        Ok(DhtNode {
            model: cfg.model,
            device: cfg.device,
            interval_ms: cfg.interval,
            retries: cfg.retries,
            topic: Arc::from(cfg.topic),
            simulate: cfg.simulate,
        })
    }

    pub(crate) async fn run(self, mut io: NodeIo) {
        let cancel = io.cancel.clone();
        let mut ticker = tokio::time::interval(Duration::from_millis(self.interval_ms));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut sample = 0u64;
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let reading = if self.simulate {
                Ok(simulated_reading(sample, self.interval_ms))
            } else {
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return,
                    r = read_device(io.reader.clone(), &self.device, self.model, self.retries) => r,
                }
            };
            sample += 1;
            let payload =
                reading.map(|r| json!({"temperature": r.temperature, "humidity": r.humidity}));
            io.deliver(payload, &self.topic).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::FsReader;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A reader in front of the real files that fails the first `fail` reads with the given OS
    /// error, as the kernel driver does when the sensor's reply is garbled.
    #[derive(Debug)]
    struct Flaky {
        fail: AtomicU32,
        errno: i32,
        reads: AtomicU32,
    }

    impl SysfsReader for Flaky {
        fn read_to_string(&self, path: &Path) -> io::Result<String> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            if self
                .fail
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| f.checked_sub(1))
                .is_ok()
            {
                return Err(io::Error::from_raw_os_error(self.errno));
            }
            FsReader.read_to_string(path)
        }
    }

    fn fake_device(t: &str, h: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let dev = root.path().join("iio:device0");
        std::fs::create_dir(&dev).unwrap();
        std::fs::write(dev.join("in_temp_input"), t).unwrap();
        std::fs::write(dev.join("in_humidityrelative_input"), h).unwrap();
        std::fs::write(dev.join("name"), "dht11\n").unwrap();
        root
    }

    #[tokio::test(start_paused = true)]
    async fn parses_milli_units_from_the_iio_files() {
        let root = fake_device("23500\n", "41200\n");
        let dev = root.path().join("iio:device0");
        let r = read_device(Arc::new(FsReader), &dev, DhtModel::Dht22, 3)
            .await
            .unwrap();
        assert_eq!(
            r,
            DhtReading {
                temperature: 23.5,
                humidity: 41.2
            }
        );
        let root = fake_device("-4100", "99000");
        let dev = root.path().join("iio:device0");
        let r = read_device(Arc::new(FsReader), &dev, DhtModel::Dht22, 3)
            .await
            .unwrap();
        assert_eq!(r.temperature, -4.1);
    }

    #[tokio::test(start_paused = true)]
    async fn eio_is_retried_until_the_read_succeeds() {
        let root = fake_device("30100", "50000");
        let dev = root.path().join("iio:device0");
        let flaky = Arc::new(Flaky {
            fail: AtomicU32::new(2),
            errno: EIO,
            reads: AtomicU32::new(0),
        });
        let (v, retries) = read_attr(flaky.clone(), dev.join("in_temp_input"), 3)
            .await
            .unwrap();
        assert_eq!((v, retries), (30.1, 2));
        assert_eq!(flaky.reads.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn eio_beyond_the_retry_budget_is_an_error() {
        let root = fake_device("30100", "50000");
        let dev = root.path().join("iio:device0");
        let flaky = Arc::new(Flaky {
            fail: AtomicU32::new(10),
            errno: EIO,
            reads: AtomicU32::new(0),
        });
        let e = read_device(flaky.clone(), &dev, DhtModel::Dht22, 3)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("after 3 retries"), "{e}");
        assert_eq!(flaky.reads.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn other_errors_are_not_retried() {
        let root = fake_device("30100", "50000");
        let dev = root.path().join("iio:device0");
        let flaky = Arc::new(Flaky {
            fail: AtomicU32::new(1),
            errno: 13,
            reads: AtomicU32::new(0),
        });
        assert!(
            read_device(flaky.clone(), &dev, DhtModel::Dht22, 3)
                .await
                .is_err()
        );
        assert_eq!(flaky.reads.load(Ordering::SeqCst), 1);
        let missing = root.path().join("iio:device9");
        let e = read_device(Arc::new(FsReader), &missing, DhtModel::Dht22, 3)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("iio:device9"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn garbage_and_implausible_values_are_errors() {
        let root = fake_device("abc", "50000");
        let dev = root.path().join("iio:device0");
        assert!(
            read_device(Arc::new(FsReader), &dev, DhtModel::Dht22, 0)
                .await
                .is_err()
        );
        let root = fake_device("95000", "50000");
        let dev = root.path().join("iio:device0");
        let e = read_device(Arc::new(FsReader), &dev, DhtModel::Dht11, 0)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("implausible"), "{e}");
    }

    #[test]
    fn simulation_is_deterministic_and_crosses_thirty() {
        let a: Vec<DhtReading> = (0..120).map(|k| simulated_reading(k, 500)).collect();
        let b: Vec<DhtReading> = (0..120).map(|k| simulated_reading(k, 500)).collect();
        assert_eq!(a, b);
        let max = a.iter().map(|r| r.temperature).fold(f64::MIN, f64::max);
        let min = a.iter().map(|r| r.temperature).fold(f64::MAX, f64::min);
        assert!(
            (33.5..=34.0).contains(&max) && (22.0..=22.5).contains(&min),
            "{min}..{max}"
        );
        // The first reading above 30 °C comes within five seconds at a 500 ms interval.
        let first_hot = a.iter().position(|r| r.temperature > 30.0).unwrap();
        assert!(first_hot <= 10, "{first_hot}");
        assert_eq!(simulated_reading(120, 500), simulated_reading(0, 500));
    }

    #[test]
    fn interval_limits_follow_the_model_unless_simulated() {
        let cfg = |v: serde_json::Value| serde_json::from_value::<DhtConfig>(v).unwrap();
        assert!(
            DhtNode::new(cfg(json!({"interval": 1000})))
                .unwrap_err()
                .contains("2000")
        );
        assert!(DhtNode::new(cfg(json!({"interval": 1000, "model": "dht11"}))).is_ok());
        assert!(DhtNode::new(cfg(json!({"interval": 500, "simulate": true}))).is_ok());
        assert!(
            DhtNode::new(cfg(json!({"retries": 11})))
                .unwrap_err()
                .contains("retries")
        );
        assert!(serde_json::from_value::<DhtConfig>(json!({"model": "dht99"})).is_err());
    }
}
