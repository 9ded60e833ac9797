//! `GET /strategies`: the deployment strategies and the reference defaults each fills in
//! (`floe_rollout::StrategyConfig::defaults`, shown the way a deployment shows its config), so
//! a client such as the console can start a create form from the values the server will use.

use super::types::{StrategyDefaults, StrategyList};
use crate::service::config_json;
use axum::Json;
use floe_rollout::{Strategy, StrategyConfig};

/// Every strategy with its defaults, in the engine's order.
pub(super) async fn list() -> Json<StrategyList> {
    Json(StrategyList {
        strategies: Strategy::ALL
            .iter()
            .map(|s| StrategyDefaults {
                name: s.name().to_string(),
                config: config_json(&StrategyConfig::defaults(*s)),
            })
            .collect(),
    })
}
