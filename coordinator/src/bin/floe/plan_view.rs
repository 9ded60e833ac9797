//! The plan's canary picks (with the type or region each covers) and its warnings, as
//! `floe deploy show` and `floe sim` print them.

use crate::config::table;
use floe_coordinator::contract::DeploymentPlan;
use floe_rollout::CanaryReason;

/// Canary rows printed before "… and N more".
const MAX_ROWS: usize = 20;

/// The canary table and the warnings; empty when the plan has neither.
pub(crate) fn render(plan: &DeploymentPlan) -> String {
    let mut out = String::new();
    if !plan.canary.is_empty() {
        let count = |r: CanaryReason| plan.canary.iter().filter(|c| c.reason == r).count();
        out.push_str(&format!(
            "canary: {} devices ({} by device type, {} by region, {} to reach its size)\n",
            plan.canary.len(),
            count(CanaryReason::DeviceType),
            count(CanaryReason::Region),
            count(CanaryReason::Size)
        ));
        // Coverage picks first: they are the ones that say why the canary looks as it does.
        let mut rows: Vec<&_> = plan
            .canary
            .iter()
            .filter(|c| c.reason != CanaryReason::Size)
            .chain(
                plan.canary
                    .iter()
                    .filter(|c| c.reason == CanaryReason::Size),
            )
            .collect();
        let more = rows.len().saturating_sub(MAX_ROWS);
        rows.truncate(MAX_ROWS);
        let rows: Vec<Vec<String>> = rows
            .iter()
            .map(|c| {
                vec![
                    c.device_id.clone(),
                    c.device_type.clone(),
                    c.region.clone(),
                    c.monitoring.to_string(),
                    c.covers.clone(),
                ]
            })
            .collect();
        out.push_str(&table(
            &["CANARY", "TYPE", "REGION", "MONITORING", "WHY"],
            &rows,
        ));
        if more > 0 {
            out.push_str(&format!("… and {more} more canary devices\n"));
        }
    }
    for w in &plan.warnings {
        out.push_str(&format!("plan warning: {w}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use floe_coordinator::contract::CanaryPickView;

    #[test]
    fn picks_and_warnings() {
        let pick = |id: &str, reason, covers: &str| CanaryPickView {
            device_id: id.into(),
            device_type: "rpi4".into(),
            region: "eu".into(),
            reason,
            monitoring: 80,
            covers: covers.into(),
        };
        let plan = DeploymentPlan {
            canary: vec![
                pick("d9", CanaryReason::Size, "fills the canary to its size"),
                pick("d1", CanaryReason::DeviceType, "covers device type rpi4"),
            ],
            warnings: vec!["blue-green to 501 devices: …".into()],
        };
        let text = render(&plan);
        assert!(
            text.starts_with(
                "canary: 2 devices (1 by device type, 0 by region, 1 to reach its size)\n"
            ),
            "{text}"
        );
        let d1 = text.find("d1").unwrap();
        let d9 = text.find("d9").unwrap();
        assert!(d1 < d9, "coverage picks first: {text}");
        assert!(text.contains("covers device type rpi4"), "{text}");
        assert!(
            text.ends_with("plan warning: blue-green to 501 devices: …\n"),
            "{text}"
        );
        assert_eq!(render(&DeploymentPlan::default()), "");
    }
}
