//! `sensor`: polls a numeric text file (a sysfs attribute such as a thermal zone or an ADC
//! channel) every `interval` and emits `value * scale + offset`.

use super::at_least;
use crate::task::NodeIo;
use crate::task::{NodeError, SysfsReader};
use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::MissedTickBehavior;

#[derive(Debug, Deserialize)]
pub(crate) struct SensorConfig {
    path: PathBuf,
    #[serde(default = "one")]
    scale: f64,
    #[serde(default)]
    offset: f64,
    /// Milliseconds (compiled).
    #[serde(default = "second")]
    interval: u64,
    #[serde(default = "default_topic")]
    topic: String,
}

fn one() -> f64 {
    1.0
}

fn second() -> u64 {
    1000
}

fn default_topic() -> String {
    "sensor".to_string()
}

/// The running sensor node.
#[derive(Debug)]
pub(crate) struct SensorNode {
    path: Arc<Path>,
    scale: f64,
    offset: f64,
    interval: Duration,
    topic: Arc<str>,
}

/// Reads one value and applies scale and offset.
pub(crate) fn read_value(
    reader: &dyn SysfsReader,
    path: &Path,
    scale: f64,
    offset: f64,
) -> Result<f64, NodeError> {
    let text = reader
        .read_to_string(path)
        .map_err(|source| NodeError::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
    let raw: f64 = text.trim().parse().map_err(|_| {
        NodeError::Read(format!(
            "{}: not a number: {:?}",
            path.display(),
            text.trim().chars().take(40).collect::<String>()
        ))
    })?;
    let v = raw * scale + offset;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(NodeError::Read(format!(
            "{}: value is not finite",
            path.display()
        )))
    }
}

impl SensorNode {
    pub(crate) fn new(cfg: SensorConfig) -> Result<Self, String> {
        at_least("interval", cfg.interval, 10)?;
        if !cfg.scale.is_finite() || !cfg.offset.is_finite() {
            return Err("scale and offset must be finite numbers".to_string());
        }
        Ok(SensorNode {
            path: Arc::from(cfg.path.as_path()),
            scale: cfg.scale,
            offset: cfg.offset,
            interval: Duration::from_millis(cfg.interval),
            topic: Arc::from(cfg.topic),
        })
    }

    pub(crate) async fn run(self, mut io: NodeIo) {
        let cancel = io.cancel.clone();
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let reader = io.reader.clone();
            let path = self.path.clone();
            let (scale, offset) = (self.scale, self.offset);
            // File reads block; sysfs attributes of slow buses can take milliseconds.
            let got =
                tokio::task::spawn_blocking(move || read_value(&*reader, &path, scale, offset))
                    .await
                    .unwrap_or_else(|source| {
                        Err(NodeError::ReaderTask {
                            path: self.path.to_path_buf(),
                            source,
                        })
                    });
            io.deliver(got.map(Value::from), &self.topic).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::FsReader;

    #[test]
    fn scale_and_offset_apply_to_the_file_value() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("temp");
        std::fs::write(&p, "45000\n").unwrap();
        assert_eq!(read_value(&FsReader, &p, 0.001, 0.0).unwrap(), 45.0);
        assert_eq!(read_value(&FsReader, &p, 0.001, -5.0).unwrap(), 40.0);
        std::fs::write(&p, "12.5").unwrap();
        assert_eq!(read_value(&FsReader, &p, 2.0, 1.0).unwrap(), 26.0);
    }

    #[test]
    fn bad_files_are_errors_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("adc");
        std::fs::write(&p, "hello").unwrap();
        let e = read_value(&FsReader, &p, 1.0, 0.0).unwrap_err().to_string();
        assert!(e.contains("not a number") && e.contains("adc"), "{e}");
        let missing = dir.path().join("missing");
        let e = read_value(&FsReader, &missing, 1.0, 0.0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing"), "{e}");
    }

    #[test]
    fn config_bounds() {
        let cfg: SensorConfig =
            serde_json::from_value(serde_json::json!({"path": "/x", "interval": 5})).unwrap();
        assert!(SensorNode::new(cfg).unwrap_err().contains("interval"));
        let e = serde_json::from_value::<SensorConfig>(serde_json::json!({"scale": 2}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("path"), "{e}");
    }
}
