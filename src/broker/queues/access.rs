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
        self.may_use_kind(security, principal, action, DestinationKind::Queue, name)
    }

    /// [`Queues::may_use`] for temporary queue `name`, decided by the
    /// `tempDestinationAuthorizationEntry` (ActiveMQ's rule: creating one needs its `admin`).
    pub fn may_use_temporary(
        &self,
        security: &Security,
        principal: &Principal,
        action: Action,
        name: &str,
    ) -> Result<(), QueueRefusal> {
        self.may_use_kind(
            security,
            principal,
            action,
            DestinationKind::TempQueue,
            name,
        )
    }

    fn may_use_kind(
        &self,
        security: &Security,
        principal: &Principal,
        action: Action,
        kind: DestinationKind,
        name: &str,
    ) -> Result<(), QueueRefusal> {
        if !security.authorize_destination(principal, action, kind, name) {
            return Err(QueueRefusal::NotAuthorized);
        }
        if security.authorization_enabled()
            && !self.exists(name)
            && !security.authorize_destination(principal, Action::Admin, kind, name)
        {
            let scheme = match kind {
                DestinationKind::TempQueue => "temp-queue",
                _ => "queue",
            };
            tracing::info!(
                user = %principal.user,
                queue = %name,
                "User {} is not authorized to create: {}://{}",
                principal.user,
                scheme,
                name
            );
            return Err(QueueRefusal::NotCreated);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::broker::durability::MemoryOnly;
    use crate::broker::routing::memory::MemoryGauge;

    fn security() -> Security {
        let xml = r#"<beans xmlns="http://www.springframework.org/schema/beans">
          <broker xmlns="http://activemq.apache.org/schema/core" persistent="false">
            <plugins>
              <simpleAuthenticationPlugin><users>
                <authenticationUser username="u" password="p" groups="users"/>
              </users></simpleAuthenticationPlugin>
              <authorizationPlugin><map><authorizationMap><authorizationEntries>
                <authorizationEntry queue="jobs.>" read="users" write="users"/>
                <authorizationEntry queue="own.>" read="users" write="users" admin="users"/>
                <authorizationEntry topic="jobs.>" read="users" write="users" admin="users"/>
              </authorizationEntries></authorizationMap></map></authorizationPlugin>
            </plugins>
            <transportConnectors>
              <transportConnector name="mqtt" uri="mqtt://127.0.0.1:0"/>
            </transportConnectors>
          </broker></beans>"#;
        let options = crate::config::LoadOptions::default();
        let config = crate::config::load_str(xml, std::path::Path::new("."), &options)
            .config
            .expect("config compiles");
        Security::from_config(&config).expect("security")
    }

    #[test]
    fn queue_entries_govern_queues_and_creation_needs_admin() {
        let security = security();
        let queues = Queues::new(
            Arc::new(MemoryOnly::default()),
            MemoryGauge::new(u64::MAX),
            Default::default(),
        );
        let user = Principal {
            user: Arc::from("u"),
            groups: vec![Arc::from("users")],
            anonymous: false,
        };
        let may = |action, name: &str| queues.may_use(&security, &user, action, name);
        assert_eq!(
            may(Action::Write, "other"),
            Err(QueueRefusal::NotAuthorized)
        );
        assert_eq!(
            may(Action::Write, "jobs.a"),
            Err(QueueRefusal::NotCreated),
            "a topic entry's admin does not count for a queue"
        );
        assert_eq!(may(Action::Read, "own.a"), Ok(()), "admin: may create");
        queues.declare(["jobs.a"]);
        assert_eq!(may(Action::Write, "jobs.a"), Ok(()), "exists now");
        assert_eq!(
            queues.may_use(&Security::default(), &user, Action::Admin, "x"),
            Ok(())
        );
    }
}
