//! The `system` line of `floe device show`: a device's own figures (CPU, memory use,
//! temperature and throttling, disk, the functional check), unknown ones left out.

use floe_rollout::SystemFigures;

/// The figures in words, or `-` when the device sent none.
pub(crate) fn render(s: &SystemFigures) -> String {
    let mut parts = Vec::new();
    if let Some(c) = s.cpu_percent {
        parts.push(format!("cpu {c:.1}%"));
    }
    if let Some(m) = s.memory_used_percent {
        parts.push(format!("memory {m:.1}%"));
    }
    if let Some(t) = s.temperature_c {
        parts.push(format!("{t:.1} C"));
    }
    match s.throttled {
        Some(true) => parts.push("THROTTLED".into()),
        Some(false) => parts.push("not throttled".into()),
        None => {}
    }
    match (s.disk_free_mb, s.disk_used_percent) {
        (Some(f), Some(u)) => parts.push(format!("disk {f:.0} MB free ({u:.1}% used)")),
        (Some(f), None) => parts.push(format!("disk {f:.0} MB free")),
        (None, Some(u)) => parts.push(format!("disk {u:.1}% used")),
        (None, None) => {}
    }
    match s.functional_ok {
        Some(true) => parts.push("functional check passed".into()),
        Some(false) => parts.push("FUNCTIONAL CHECK FAILED".into()),
        None => {}
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_figures_only() {
        assert_eq!(render(&SystemFigures::default()), "-");
        let s = SystemFigures {
            cpu_percent: Some(12.5),
            memory_used_percent: Some(91.0),
            temperature_c: Some(61.5),
            throttled: Some(true),
            disk_free_mb: Some(1200.0),
            disk_used_percent: None,
            functional_ok: Some(false),
        };
        assert_eq!(
            render(&s),
            "cpu 12.5%, memory 91.0%, 61.5 C, THROTTLED, disk 1200 MB free, FUNCTIONAL CHECK FAILED"
        );
    }
}
