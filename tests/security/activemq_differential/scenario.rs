//! What one round of the differential runs: authorization entries, users, and what each user
//! subscribes to and publishes; random (from a seed) or fixed; and the one `activemq.xml` both
//! brokers load.

use std::fmt;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::peer::MARKER_TOPIC;

/// The groups random entries grant to.
pub const GROUPS: [&str; 3] = ["g1", "g2", "g3"];
/// A group every user is in and that random entries never mention: it reads and writes the
/// marker topic.
pub const EVERYONE: &str = "everyone";
/// The group (and user name) of a connection without credentials when
/// `anonymousAccessAllowed="true"` (ActiveMQ's defaults for `anonymousUser`/`anonymousGroup`).
pub const ANONYMOUS: &str = "anonymous";
/// [`GROUPS`] and [`ANONYMOUS`], for the entries of rounds with an anonymous user.
const GROUPS_AND_ANONYMOUS: [&str; 4] = ["g1", "g2", "g3", ANONYMOUS];
/// The users of random rounds (besides the observer).
const USER_NAMES: [&str; 4] = ["u0", "u1", "u2", "u3"];
/// The literal levels of random names.
const LEVELS: [&str; 3] = ["a", "b", "c"];

/// How `admin` (ActiveMQ: "may create the destination") is kept from interfering with the
/// read/write answers that are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminMode {
    /// One more entry, `topic=">" admin="g1,g2,g3,everyone"`: every user may create every topic.
    Broad,
    /// No admin anywhere, but every topic the round can publish to is declared in
    /// `<destinations>`, so nothing needs creating.
    Declared,
    /// Random admin sets on the random entries, nothing declared: compares creation too.
    Random,
}

/// How users log in; both brokers read the same files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// `simpleAuthenticationPlugin`: a connection has only group principals in ActiveMQ.
    Simple,
    /// `jaasAuthenticationPlugin` over `PropertiesLoginModule` (`login.config`,
    /// `users.properties`, `groups.properties`): a user principal and group principals.
    Jaas,
}

#[derive(Debug, Clone)]
pub struct Entry {
    /// ActiveMQ pattern (`a.*.>`), or several separated by commas (a composite entry).
    pub topic: String,
    pub read: Vec<&'static str>,
    pub write: Vec<&'static str>,
    pub admin: Vec<&'static str>,
    /// `groupClass="org.apache.activemq.jaas.UserPrincipal"`: the names are user names.
    pub user_names: bool,
}

#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub groups: Vec<&'static str>,
    /// MQTT filters, subscribed one SUBSCRIBE each, in order.
    pub filters: Vec<String>,
    /// Concrete MQTT topics, published at QoS 1 in order.
    pub publishes: Vec<String>,
    /// Concrete MQTT topics published at QoS 1 with the retain flag before anyone subscribes:
    /// what reaches a subscriber at SUBSCRIBE is compared too.
    pub retains: Vec<String>,
    /// Connects without user name and password (`simpleAuthenticationPlugin` with
    /// `anonymousAccessAllowed="true"`); `groups` is then `[ANONYMOUS]`.
    pub anonymous: bool,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub entries: Vec<Entry>,
    /// `<defaultEntry>` (its `topic` is not written).
    pub default_entry: Option<Entry>,
    pub users: Vec<User>,
    pub admin: AdminMode,
    pub auth: AuthMode,
}

/// The group of the observer of random rounds: a user who may read everything (an entry `>`
/// readable only by this group, which changes no other user's answers) and subscribes to `#`, so
/// that every accepted PUBLISH is seen, write decisions included.
pub const OBSERVERS: &str = "observers";

impl Entry {
    pub fn new(
        topic: &str,
        read: &[&'static str],
        write: &[&'static str],
        admin: &[&'static str],
    ) -> Entry {
        Entry {
            topic: topic.into(),
            read: read.to_vec(),
            write: write.to_vec(),
            admin: admin.to_vec(),
            user_names: false,
        }
    }
}

impl Entry {
    /// ` read=".." write=".." admin=".."`, leaving out empty sets.
    fn acl_attributes(&self) -> String {
        let mut text = String::new();
        for (name, groups) in [
            ("read", &self.read),
            ("write", &self.write),
            ("admin", &self.admin),
        ] {
            if !groups.is_empty() {
                text.push_str(&format!(r#" {name}="{}""#, groups.join(",")));
            }
        }
        if self.user_names {
            text.push_str(r#" groupClass="org.apache.activemq.jaas.UserPrincipal""#);
        }
        text
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "topic={:?}", self.topic)?;
        for (name, groups) in [
            ("read", &self.read),
            ("write", &self.write),
            ("admin", &self.admin),
        ] {
            if !groups.is_empty() {
                write!(f, " {name}={:?}", groups.join(","))?;
            }
        }
        if self.user_names {
            write!(f, " (user names)")?;
        }
        Ok(())
    }
}

impl Scenario {
    /// A random round: 2-6 entries over `a`/`b`/`c`, `*` and `>` (1-3 levels), now and then a
    /// `defaultEntry`, 4 users in random subsets of g1..g3, each with 10 random filters and 6
    /// random publishes, and the observer (see [`OBSERVERS`]).
    ///
    /// `user_principals`: also entries with `groupClass="org.apache.activemq.jaas.UserPrincipal"`
    /// naming users. Off by default: ActiveMQ's `simpleAuthenticationPlugin` gives a connection
    /// only group principals (`SimpleAuthenticationBroker`'s security context returns the user's
    /// groups), so such entries never grant anything there, while ferromq grants them to the
    /// named user (see `user_entries_under_simple_authentication_match_activemq`).
    /// With [`AuthMode::Jaas`] user-principal entries are always drawn.
    pub fn random(seed: u64, admin: AdminMode, auth: AuthMode, user_principals: bool) -> Scenario {
        let user_principals = user_principals || auth == AuthMode::Jaas;
        let mut rng = StdRng::seed_from_u64(seed);
        // Simple rounds have an anonymous user half of the time (JAAS would need GuestLoginModule).
        let anonymous = auth == AuthMode::Simple && rng.random_bool(0.5);
        let groups: &[&'static str] = if anonymous {
            &GROUPS_AND_ANONYMOUS
        } else {
            &GROUPS
        };
        let entry_count = rng.random_range(2..=6);
        let mut entries: Vec<Entry> = (0..entry_count)
            .map(|_| {
                // Now and then an entry that names users instead of groups.
                let names: &[&'static str] = if rng.random_bool(0.15) && user_principals {
                    &USER_NAMES
                } else {
                    groups
                };
                // Now and then a composite entry (`a.b,c.>`): each pattern applies.
                let topic = if rng.random_bool(0.1) {
                    format!("{},{}", random_pattern(&mut rng), random_pattern(&mut rng))
                } else {
                    random_pattern(&mut rng)
                };
                Entry {
                    topic,
                    read: random_acl(&mut rng, names),
                    write: random_acl(&mut rng, names),
                    admin: if admin == AdminMode::Random {
                        random_acl(&mut rng, names)
                    } else {
                        Vec::new()
                    },
                    user_names: names == USER_NAMES,
                }
            })
            .collect();
        let default_entry = rng.random_bool(0.3).then(|| Entry {
            user_names: false,
            topic: String::new(),
            read: random_groups(&mut rng),
            write: random_groups(&mut rng),
            admin: if admin == AdminMode::Random {
                random_groups(&mut rng)
            } else {
                Vec::new()
            },
        });
        let mut users: Vec<User> = USER_NAMES
            .iter()
            .map(|name| User {
                name: name.to_string(),
                groups: random_groups(&mut rng),
                filters: (0..10).map(|_| random_filter(&mut rng)).collect(),
                publishes: (0..6).map(|_| random_topic(&mut rng)).collect(),
                retains: (0..2).map(|_| random_topic(&mut rng)).collect(),
                anonymous: false,
            })
            .collect();
        if anonymous {
            users.push(User {
                name: ANONYMOUS.into(),
                groups: vec![ANONYMOUS],
                filters: (0..10).map(|_| random_filter(&mut rng)).collect(),
                publishes: (0..6).map(|_| random_topic(&mut rng)).collect(),
                retains: (0..2).map(|_| random_topic(&mut rng)).collect(),
                anonymous: true,
            });
        }
        entries.push(Entry::new(">", &[OBSERVERS], &[], &[]));
        users.push(User {
            name: "observer".into(),
            groups: vec![OBSERVERS],
            filters: vec!["#".into()],
            publishes: Vec::new(),
            retains: Vec::new(),
            anonymous: false,
        });
        Scenario {
            entries,
            default_entry,
            users,
            admin,
            auth,
        }
    }

    /// The files beside `activemq.xml` (name, content): for [`AuthMode::Jaas`], `login.config`
    /// and the users and groups it names.
    pub fn conf_files(&self) -> Vec<(&'static str, String)> {
        if self.auth != AuthMode::Jaas {
            return Vec::new();
        }
        let login =
            "activemq {\n    org.apache.activemq.jaas.PropertiesLoginModule required\n        \
                     org.apache.activemq.jaas.properties.user=\"users.properties\"\n        \
                     org.apache.activemq.jaas.properties.group=\"groups.properties\";\n};\n";
        let users: String = self
            .users
            .iter()
            .map(|u| format!("{}=pw\n", u.name))
            .collect();
        let mut members: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for u in &self.users {
            for g in u.groups.iter().chain(std::iter::once(&EVERYONE)) {
                members.entry(g).or_default().push(&u.name);
            }
        }
        let groups: String = members
            .iter()
            .map(|(g, names)| format!("{g}={}\n", names.join(",")))
            .collect();
        vec![
            ("login.config", login.to_owned()),
            ("users.properties", users),
            ("groups.properties", groups),
        ]
    }

    /// The `activemq.xml` of this round with its MQTT connector on `127.0.0.1:<port>`: the same
    /// text for ferromq (port 0) and ActiveMQ.
    pub fn xml(&self, port: u16) -> String {
        let mut entries = String::new();
        for e in self.entries.iter().chain(self.fixed_entries().iter()) {
            entries.push_str(&format!(
                r#"<authorizationEntry topic="{}"{}"#,
                e.topic,
                e.acl_attributes()
            ));
            entries.push_str("/>\n            ");
        }
        let default_entry = match &self.default_entry {
            Some(e) => format!(
                "<defaultEntry><authorizationEntry{}/></defaultEntry>",
                e.acl_attributes()
            ),
            None => String::new(),
        };
        let users: String = self
            .users
            .iter()
            .filter(|u| !u.anonymous)
            .map(|u| {
                let mut groups = u.groups.clone();
                groups.push(EVERYONE);
                format!(
                    r#"<authenticationUser username="{}" password="pw" groups="{}"/>
          "#,
                    u.name,
                    groups.join(",")
                )
            })
            .collect();
        let authentication = match self.auth {
            AuthMode::Simple => format!(
                "<simpleAuthenticationPlugin{}>\n        <users>\n          {users}</users>\n      \
                 </simpleAuthenticationPlugin>",
                if self.users.iter().any(|u| u.anonymous) {
                    r#" anonymousAccessAllowed="true""#
                } else {
                    ""
                }
            ),
            AuthMode::Jaas => r#"<jaasAuthenticationPlugin configuration="activemq"/>"#.to_owned(),
        };
        let destinations = if self.admin == AdminMode::Declared {
            let mut names: std::collections::BTreeSet<String> =
                every_concrete_topic().into_iter().collect();
            names.insert(MARKER_TOPIC.replace('/', "."));
            for u in &self.users {
                names.extend(u.publishes.iter().map(|t| t.replace('/', ".")));
                names.extend(u.retains.iter().map(|t| t.replace('/', ".")));
            }
            let topics: String = names
                .iter()
                .map(|t| format!(r#"<topic physicalName="{t}"/>"#))
                .collect();
            format!("<destinations>{topics}</destinations>")
        } else {
            String::new()
        };
        format!(
            r#"<beans xmlns="http://www.springframework.org/schema/beans"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.springframework.org/schema/beans http://www.springframework.org/schema/beans/spring-beans.xsd
    http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="differential" persistent="false" useJmx="false" advisorySupport="false">
    {destinations}
    <plugins>
      {authentication}
      <authorizationPlugin>
        <map>
          <authorizationMap>
            <authorizationEntries>
            {entries}</authorizationEntries>
            {default_entry}
          </authorizationMap>
        </map>
      </authorizationPlugin>
    </plugins>
    <transportConnectors>
      <transportConnector name="mqtt" uri="mqtt://127.0.0.1:{port}"/>
    </transportConnectors>
  </broker>
</beans>
"#
        )
    }

    /// The entries every round has besides its own: the marker topic (at a depth no filter of the
    /// round reaches, so it never changes a lookup of theirs) and, in [`AdminMode::Broad`], admin
    /// on everything.
    fn fixed_entries(&self) -> Vec<Entry> {
        let marker = MARKER_TOPIC.replace('/', ".");
        let all = [EVERYONE, ANONYMOUS];
        let mut fixed = vec![Entry::new(&marker, &all, &all, &all)];
        if self.admin == AdminMode::Broad {
            fixed.push(Entry::new(
                ">",
                &[],
                &[],
                &["g1", "g2", "g3", EVERYONE, ANONYMOUS],
            ));
        }
        fixed
    }

    /// The entries, one per line, for a report.
    pub fn describe_entries(&self) -> String {
        let mut text: String = self.entries.iter().map(|e| format!("  {e}\n")).collect();
        if let Some(e) = &self.default_entry {
            text.push_str(&format!("  defaultEntry:{}\n", e.acl_attributes()));
        }
        text.push_str(&format!(
            "  (admin mode {:?}, authentication {:?})",
            self.admin, self.auth
        ));
        text
    }
}

/// The groups of an entry's read, write or admin: now and then `*` too, which both brokers take
/// as "every principal".
fn random_acl(rng: &mut StdRng, names: &[&'static str]) -> Vec<&'static str> {
    let mut groups: Vec<&'static str> = names
        .iter()
        .copied()
        .filter(|_| rng.random_bool(0.4))
        .collect();
    if rng.random_bool(0.08) {
        groups.push("*");
    }
    groups
}

fn random_groups(rng: &mut StdRng) -> Vec<&'static str> {
    GROUPS
        .into_iter()
        .filter(|_| rng.random_bool(0.4))
        .collect()
}

fn random_pattern(rng: &mut StdRng) -> String {
    let depth = rng.random_range(1..=3);
    (0..depth)
        .map(|i| {
            let last = i + 1 == depth;
            match rng.random_range(0..10) {
                0..=5 => LEVELS[rng.random_range(0..LEVELS.len())],
                6 | 7 => "*",
                // `>` is mostly last; now and then inside (`a.>.b`), which ActiveMQ accepts.
                8 if last => ">",
                9 if last || rng.random_bool(0.3) => ">",
                _ => LEVELS[rng.random_range(0..LEVELS.len())],
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn random_filter(rng: &mut StdRng) -> String {
    if rng.random_bool(0.05) {
        return "#".into();
    }
    let depth = rng.random_range(1..=3);
    (0..depth)
        .map(|i| {
            let last = i + 1 == depth;
            match rng.random_range(0..10) {
                0..=5 => LEVELS[rng.random_range(0..LEVELS.len())],
                6 | 7 => "+",
                _ if last => "#",
                _ => "+",
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn random_topic(rng: &mut StdRng) -> String {
    let depth = rng.random_range(1..=3);
    (0..depth)
        .map(|_| LEVELS[rng.random_range(0..LEVELS.len())])
        .collect::<Vec<_>>()
        .join("/")
}

/// Every concrete ActiveMQ name of 1-3 levels over the literal levels (what a round publishes to).
fn every_concrete_topic() -> Vec<String> {
    let mut names: Vec<String> = LEVELS.iter().map(|l| l.to_string()).collect();
    let mut frontier = names.clone();
    for _ in 1..3 {
        frontier = frontier
            .iter()
            .flat_map(|n| LEVELS.iter().map(move |l| format!("{n}.{l}")))
            .collect();
        names.extend(frontier.iter().cloned());
    }
    names
}
