//! Health unreachable from the coordinator's own view (001 `health_endpoint_down`, 003
//! "health endpoint unreachable"): a targeted device whose agent keeps reporting but whose
//! report carries no health summary (its flow's health could not be read) is fed
//! `DeviceEvent::HealthUnreachable`. The engine starts the device's 2-minute clock at the
//! first one and ignores the repeats without a log entry; a report with a health summary
//! clears it, and past 2 minutes the device is rolled back (and counted towards the wave's
//! "unreachable on > 10 %" trigger meanwhile). Complete silence is not this: a device that
//! stops reporting goes offline, and offline is not failed.

use super::{Deployments, Env};
use floe_rollout::{DeviceEvent, Input, Millis};

impl Deployments {
    /// `device` reported without a health summary: every unfinished deployment that targets
    /// it hears that its health is unreachable.
    pub(in crate::service) fn health_missing(
        &mut self,
        env: &mut Env<'_>,
        device: &str,
        now: Millis,
    ) {
        for (dep, index) in self.targeting(device) {
            let input = Input::Device {
                device: index,
                event: DeviceEvent::HealthUnreachable,
            };
            if let Err(e) = self.step(env, &dep, now, input) {
                tracing::warn!(deployment = %dep, device, error = %e, "engine refused a health-unreachable event");
            }
        }
    }
}
