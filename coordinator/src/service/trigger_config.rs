//! `config.triggers` of a deployment request onto the engine's trigger config: each field the
//! request sets replaces the reference default; durations are parsed here (errors name
//! `config.triggers.<field>`), ranges are checked by the plan (`TriggerConfig::validate`, whose
//! errors name the same field).

use super::{ServiceError, validation};
use crate::contract::TriggerInput;
use floe_rollout::{Millis, TriggerConfig, parse_duration};

fn duration(field: &str, value: &Option<String>) -> Result<Option<Millis>, ServiceError> {
    value
        .as_deref()
        .map(|v| {
            parse_duration(v)
                .map_err(|e| validation(format!("config.triggers.{field}"), e.to_string()))
        })
        .transpose()
}

/// Overlays what `input` sets on `c`.
pub(super) fn apply(input: &TriggerInput, c: &mut TriggerConfig) -> Result<(), ServiceError> {
    let set = |slot: &mut f64, v: Option<f64>| {
        if let Some(v) = v {
            *slot = v;
        }
    };
    set(&mut c.memory_high_percent, input.memory_high_percent);
    set(&mut c.thermal_limit_c, input.thermal_limit_c);
    set(&mut c.thermal_margin_c, input.thermal_margin_c);
    set(&mut c.disk_free_floor_mb, input.disk_free_floor_mb);
    set(&mut c.disk_used_max_percent, input.disk_used_max_percent);
    set(
        &mut c.unreachable_wave_percent,
        input.unreachable_wave_percent,
    );
    set(&mut c.cpu_max_percent, input.cpu_max_percent);
    if let Some(v) = duration("thermal_horizon", &input.thermal_horizon)? {
        c.thermal_horizon = v;
    }
    if let Some(v) = duration("disk_exhaust_horizon", &input.disk_exhaust_horizon)? {
        c.disk_exhaust_horizon = v;
    }
    if let Some(v) = duration("trend_window", &input.trend_window)? {
        c.trend_window = v;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::service::model::ConfigInput;
    use crate::service::strategy::{plan_error, strategy_config};
    use floe_rollout::{MINUTE, Strategy};

    #[test]
    fn a_request_sets_trigger_limits_and_bad_ones_name_the_field() {
        let input = ConfigInput {
            triggers: Some(TriggerInput {
                thermal_limit_c: Some(95.0),
                thermal_horizon: Some("5m".into()),
                ..TriggerInput::default()
            }),
            ..ConfigInput::default()
        };
        let c = strategy_config(Strategy::Rolling, &input).unwrap();
        assert_eq!(c.triggers.thermal_limit_c, 95.0);
        assert_eq!(c.triggers.thermal_horizon, 5 * MINUTE);
        // Untouched fields keep the reference defaults.
        assert_eq!(c.triggers.memory_high_percent, 90.0);

        let bad = ConfigInput {
            triggers: Some(TriggerInput {
                trend_window: Some("soon".into()),
                ..TriggerInput::default()
            }),
            ..ConfigInput::default()
        };
        let err = strategy_config(Strategy::Rolling, &bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("config.triggers.trend_window"), "{err}");

        // Ranges are the plan's to check, naming the same field.
        let mut c = strategy_config(Strategy::Rolling, &ConfigInput::default()).unwrap();
        apply(
            &TriggerInput {
                memory_high_percent: Some(120.0),
                ..TriggerInput::default()
            },
            &mut c.triggers,
        )
        .unwrap();
        let (field, reason) = c.triggers.validate().unwrap_err();
        let err = plan_error(floe_rollout::PlanError::Config { field, reason }).to_string();
        assert!(err.contains("config.triggers.memory_high_percent"), "{err}");
    }
}
