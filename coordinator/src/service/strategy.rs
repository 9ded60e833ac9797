//! A deployment request's settings: the strategy's defaults overlaid with what the request
//! sets (durations parsed, errors naming the field), the same settings as the API shows them,
//! and the plan compiler's errors as validation errors. Pure, so the deployments part only
//! asks and never parses.

use super::model::ConfigInput;
use super::{ServiceError, validation};
use crate::contract::{DeploymentConfig, WaveConfigView};
use floe_rollout::duration::format_duration;
use floe_rollout::{Millis, PlanError, Strategy, StrategyConfig, WaveConfig, parse_duration};

fn duration_field(field: &str, value: &Option<String>) -> Result<Option<Millis>, ServiceError> {
    value
        .as_deref()
        .map(|v| {
            parse_duration(v).map_err(|e| validation(format!("config.{field}"), e.to_string()))
        })
        .transpose()
}

/// The engine settings for a request: the strategy's defaults, then what the request sets.
pub fn strategy_config(
    strategy: Strategy,
    input: &ConfigInput,
) -> Result<StrategyConfig, ServiceError> {
    let mut c = StrategyConfig::defaults(strategy);
    if let Some(v) = input.batch_size {
        c.batch_size = v;
        if strategy == Strategy::Rolling {
            c.max_parallel = v;
        }
    }
    if let Some(v) = duration_field("batch_delay", &input.batch_delay)? {
        c.batch_delay = v;
    }
    if let Some(v) = input.failure_threshold {
        c.failure_threshold_percent = v;
    }
    if let Some(v) = input.canary_percentage {
        c.canary_percent = v;
    }
    if let Some(v) = duration_field("canary_delay", &input.canary_delay)? {
        c.canary_soak = v;
    }
    if let Some(v) = duration_field("timeout", &input.timeout)? {
        c.timeout = v;
    }
    if let Some(v) = duration_field("switch_delay", &input.switch_delay)? {
        c.switch_delay = v;
    }
    if let Some(v) = input.auto_rollback {
        c.auto_rollback = v;
    }
    if let Some(v) = input.health_check {
        c.health_check = v;
    }
    if let Some(v) = input.require_approval {
        c.require_approval = v;
    }
    if let Some(v) = input.quorum {
        c.quorum_percent = v;
    }
    if let Some(v) = duration_field("offline_grace", &input.offline_grace)? {
        c.offline_grace = v;
    }
    if let Some(v) = input.max_parallel {
        c.max_parallel = v;
    }
    super::baselines::apply_gate_input(&mut c.gates, input)?;
    if let Some(t) = &input.triggers {
        super::trigger_config::apply(t, &mut c.triggers)?;
    }
    if let Some(v) = input.force {
        c.force = v;
    }
    if let Some(steps) = &input.steps {
        if steps.len() > 64 {
            return Err(validation("config.steps", "at most 64 steps"));
        }
        c.steps = steps.clone();
    }
    if let Some(v) = duration_field("step_soak", &input.step_soak)? {
        c.step_soak = v;
    }
    if let Some(waves) = &input.waves {
        if waves.len() > 64 {
            return Err(validation("config.waves", "at most 64 waves"));
        }
        c.waves = waves
            .iter()
            .enumerate()
            .map(|(i, w)| {
                if let Some(name) = &w.name {
                    super::hygiene::required(
                        &format!("config.waves[{i}].name"),
                        name,
                        super::hygiene::MAX_WAVE_NAME_BYTES,
                    )?;
                }
                Ok(WaveConfig {
                    name: w.name.clone().unwrap_or_else(|| format!("wave-{}", i + 1)),
                    percentage: w.percentage,
                    soak: duration_field(&format!("waves[{i}].soak"), &w.soak)?
                        .unwrap_or(10 * floe_rollout::MINUTE),
                    failure_threshold_percent: w.failure_threshold.unwrap_or(5.0),
                    auto_rollback: c.auto_rollback,
                })
            })
            .collect::<Result<_, ServiceError>>()?;
    }
    Ok(c)
}

/// `stuck_after` when a deployment does not set it.
pub(super) const DEFAULT_STUCK_AFTER: Millis = 30 * floe_rollout::MINUTE;

/// The `config.stuck_after` a request sets, as the config shows it (the default when absent).
/// Parsed with the engine's duration parser (units, overflow); zero is refused.
pub(super) fn stuck_after_field(input: &ConfigInput) -> Result<String, ServiceError> {
    let Some(v) = input.stuck_after.as_deref() else {
        return Ok(format_duration(DEFAULT_STUCK_AFTER));
    };
    let ms = parse_duration(v).map_err(|e| validation("config.stuck_after", e.to_string()))?;
    if ms == 0 {
        return Err(validation(
            "config.stuck_after",
            "must be longer than zero (a deployment is stuck after this long without progress)",
        ));
    }
    Ok(format_duration(ms))
}

/// The config as the API shows it (the request's names and units, defaults filled in).
pub fn config_json(c: &StrategyConfig) -> DeploymentConfig {
    DeploymentConfig {
        batch_size: c.batch_size,
        batch_delay: format_duration(c.batch_delay),
        failure_threshold: c.failure_threshold_percent,
        canary_percentage: c.canary_percent,
        canary_delay: format_duration(c.canary_soak),
        timeout: format_duration(c.timeout),
        switch_delay: format_duration(c.switch_delay),
        auto_rollback: c.auto_rollback,
        health_check: c.health_check,
        require_approval: c.require_approval,
        quorum: c.quorum_percent,
        offline_grace: format_duration(c.offline_grace),
        waves: c
            .waves
            .iter()
            .map(|w| WaveConfigView {
                name: w.name.clone(),
                percentage: w.percentage,
                soak: format_duration(w.soak),
                failure_threshold: w.failure_threshold_percent,
            })
            .collect(),
        max_parallel: c.max_parallel,
        stuck_after: format_duration(DEFAULT_STUCK_AFTER),
        gates: crate::contract::GateSettings::of(&c.gates),
        force: c.force,
        steps: c.steps.clone(),
        step_soak: format_duration(c.step_soak),
    }
}

/// The plan compiler's refusal as a validation error naming the field at fault.
pub(super) fn plan_error(e: PlanError) -> ServiceError {
    match e {
        PlanError::Config { field, reason } => validation(format!("config.{field}"), reason),
        PlanError::AllAtOnceTooLarge { .. } => validation(
            "strategy",
            format!("{e} (in the request: \"config\": {{\"force\": true}})"),
        ),
        other => validation("target_devices", other.to_string()),
    }
}
