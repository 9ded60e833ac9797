//! Webhook registrations (`/api/v1/hooks`): checked, stored and audited on the actor, like
//! every write. Delivering is not done here but by `crate::webhooks`, off the actor.

use super::audit::line;
use super::core::Core;
use super::{ServiceError, random_token, validation};
use crate::contract::{HookInput, KindFilter};
use crate::store::HookRecord;
use floe_rollout::Millis;

/// Registered hooks at most (more are refused with a conflict): each costs two tasks.
pub const MAX_HOOKS: usize = 64;

impl Core {
    /// `POST /hooks`: a new hook with a fresh secret (stored and audited in one transaction).
    pub fn create_hook(
        &mut self,
        input: HookInput,
        now: Millis,
    ) -> Result<HookRecord, ServiceError> {
        super::webhooks::check_url(&input.url).map_err(|m| validation("url", m))?;
        let kinds = KindFilter::parse(&input.kinds.join(","))
            .map_err(|e| validation("kinds", e.to_string()))?;
        if let Some(d) = &input.deployment_id
            && self.store().deployment(d)?.is_none()
        {
            return Err(validation(
                "deployment_id",
                format!("deployment {d} does not exist"),
            ));
        }
        let store = self.store();
        if store.hooks()?.len() >= MAX_HOOKS {
            return Err(ServiceError::Conflict(format!(
                "{MAX_HOOKS} hooks are registered, the limit; delete one first"
            )));
        }
        let record = HookRecord {
            id: format!("hook_{}", random_token(5)?),
            url: input.url,
            kinds: kinds.entries().to_vec(),
            deployment_id: input.deployment_id,
            secret: random_token(32)?,
            created_at: now,
        };
        store.atomically(|s| -> Result<(), ServiceError> {
            s.put_hook(&record)?;
            s.audit(&line(
                now,
                "api",
                "hook.create",
                (None, record.deployment_id.as_deref()),
                "ok",
                format!(
                    "hook {} to {} for {}",
                    record.id,
                    record.url,
                    if record.kinds.is_empty() {
                        "every kind".to_string()
                    } else {
                        record.kinds.join(",")
                    }
                ),
            ))?;
            Ok(())
        })?;
        Ok(record)
    }

    /// `DELETE /hooks/{id}` (audited).
    pub fn delete_hook(&mut self, id: &str, now: Millis) -> Result<(), ServiceError> {
        let deleted = self.store().atomically(|s| -> Result<bool, ServiceError> {
            if !s.delete_hook(id)? {
                return Ok(false);
            }
            s.audit(&line(
                now,
                "api",
                "hook.delete",
                (None, None),
                "ok",
                format!("hook {id} deleted"),
            ))?;
            Ok(true)
        })?;
        if deleted {
            Ok(())
        } else {
            Err(ServiceError::NotFound {
                what: "hook",
                id: id.to_string(),
            })
        }
    }
}
