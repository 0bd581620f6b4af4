//! Who may use a queue: ActiveMQ's `AuthorizationBroker` rule for queues, as for topics
//! (see [`crate::broker::routing::destinations`]): the action (`read` to consume, `write` to
//! send) must be granted by the `queue=` authorization entries, and a queue that does not
//! exist yet is created by that use, which needs `admin` on its name. Queues declared in
//! `<destinations>`, recovered from the store or created before exist.

use crate::config::DestinationKind;
use crate::security::{Action, Principal, Security};

use super::Queues;

/// Why a queue may not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueRefusal {
    /// The action itself (read, write) is not granted.
    NotAuthorized,
    /// The queue does not exist and the principal may not create it (no `admin`).
    NotCreated,
}

impl Queues {
    /// May `principal` do `action` on queue `name` (ActiveMQ name)? The one check before
    /// [`Queues::send`] and [`Queues::subscribe`] (which create the queue when it is new).
    pub fn may_use(
        &self,
        security: &Security,
        principal: &Principal,
        action: Action,
        name: &str,
    ) -> Result<(), QueueRefusal> {
        if !security.authorize_destination(principal, action, DestinationKind::Queue, name) {
            return Err(QueueRefusal::NotAuthorized);
        }
        if security.authorization_enabled()
            && !self.exists(name)
            && !security.authorize_destination(
                principal,
                Action::Admin,
                DestinationKind::Queue,
                name,
            )
        {
            tracing::info!(
                user = %principal.user,
                queue = %name,
                "User {} is not authorized to create: queue://{}",
                principal.user,
                name
            );
            return Err(QueueRefusal::NotCreated);
        }
        Ok(())
    }
}
