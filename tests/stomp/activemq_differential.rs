//! STOMP answers compared with Apache ActiveMQ 5.17 itself.
//!
//! One `activemq.xml` ([`xml`]: an MQTT and a STOMP connector, `simpleAuthenticationPlugin`
//! users, an `authorizationPlugin` with topic and queue entries) starts ActiveMQ
//! (`support::activemq`) and ferromq (only the ports differ). Each script of [`scripts`] then
//! sends the same frames over raw TCP to both, read back by a test-side reader ([`wire`],
//! independent of ferromq's codec); each answer goes into a transcript, normalised for what
//! legitimately differs ([`script`]: ids, timestamps, session, server, header order, ERROR
//! texts). ActiveMQ's transcript, with the documented deliberate differences of [`KNOWN`] and
//! the reported ferromq bugs of [`OPEN`] applied, must equal ferromq's: any other difference
//! fails the test, printed as a diff, and so does an entry of either list that no longer
//! applies.
//!
//! Knobs: `FERROMQ_DIFF_SCRIPTS=a,b` runs only those scripts; `FERROMQ_DIFF_ONLY=activemq`
//! runs ActiveMQ alone and prints its transcripts (to write a script); `FERROMQ_DIFF_SHOW=1`
//! prints both transcripts of every script. docs/stomp-differential.md says more.
//!
//! `cargo test --test stomp activemq_differential -- --nocapture`

#[path = "diff/script.rs"]
mod script;
#[path = "diff/scripts.rs"]
mod scripts;
#[path = "diff/wire.rs"]
mod wire;

use std::net::SocketAddr;

use crate::support::activemq::{self, ActiveMq};
use crate::support::xml::load_file;
use crate::support::TestBroker;
use script::{Ctx, Target};

/// The configuration both brokers run: `admin` may do everything, `app` only `app.>`.
fn xml(mqtt_port: u16, stomp_port: u16) -> String {
    format!(
        r#"<beans xmlns="http://www.springframework.org/schema/beans"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.springframework.org/schema/beans http://www.springframework.org/schema/beans/spring-beans.xsd
    http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="stomp-differential" persistent="false" useJmx="false" advisorySupport="false">
    <plugins>
      <simpleAuthenticationPlugin anonymousAccessAllowed="false">
        <users>
          <authenticationUser username="admin" password="secret" groups="admins"/>
          <authenticationUser username="app" password="apppw" groups="apps"/>
        </users>
      </simpleAuthenticationPlugin>
      <authorizationPlugin>
        <map>
          <authorizationMap>
            <authorizationEntries>
              <authorizationEntry topic=">" read="admins" write="admins" admin="admins"/>
              <authorizationEntry queue=">" read="admins" write="admins" admin="admins"/>
              <authorizationEntry topic="app.>" read="apps" write="apps" admin="apps"/>
              <authorizationEntry queue="app.>" read="apps" write="apps" admin="apps"/>
            </authorizationEntries>
          </authorizationMap>
        </map>
      </authorizationPlugin>
    </plugins>
    <transportConnectors>
      <transportConnector name="mqtt" uri="mqtt://127.0.0.1:{mqtt_port}"/>
      <transportConnector name="stomp" uri="stomp://127.0.0.1:{stomp_port}"/>
    </transportConnectors>
  </broker>
</beans>
"#
    )
}

/// A difference: in script `script` (`*`: every script), a transcript line of ActiveMQ's
/// containing `activemq` is what ferromq answers with `activemq` replaced by `ferromq`. Each
/// entry must still apply (the test fails on a stale one).
struct Known {
    script: &'static str,
    activemq: &'static str,
    ferromq: &'static str,
    /// Why the difference is deliberate, or which bug it is.
    why: &'static str,
}

/// ActiveMQ 5.17 gives a persistent STOMP message to MQTT subscribers at QoS 0 and a
/// non-persistent one at QoS 1 (AMQ-7045); ferromq maps `persistent:true` to QoS 1.
const AMQ_7045: &str = "AMQ-7045: ActiveMQ inverts persistent and QoS; ferromq does not";

/// A destination without `/queue/`, `/topic/`, `/temp-queue/` or `/temp-topic/` is a queue of
/// that name for ActiveMQ (`/foo/x` -> `queue:///foo/x`); ferromq refuses it with an ERROR.
const BAD_PREFIX: &str = "an unknown destination prefix is an ERROR, not a queue named /foo/...";

/// STOMP 1.2 ("Protocol Negotiation"): an ERROR for versions the server does not share names
/// the ones it supports in a `version` header; ActiveMQ's has none.
const VERSIONS: &str = "the ERROR for an unsupported version lists the supported ones";

/// A STOMP 1.0 header cannot hold a newline (no escaping in 1.0): ActiveMQ writes it raw, which
/// breaks the frame (the subscriber reads a header line without a colon); ferromq writes a
/// space for a newline and a CR.
const NEWLINE_1_0: &str = "a newline or CR in a value is a space for a STOMP 1.0 receiver";

/// STOMP 1.0 has no version negotiation and no heart-beating: ferromq's CONNECTED to a 1.0
/// client has neither `version` nor `heart-beat` and a 1.0 client's `heart-beat` header is not
/// negotiated; ActiveMQ writes both (`version:1.0`) and negotiates heart-beats for 1.0 too.
const CONNECTED_1_0: &str = "STOMP 1.0 CONNECTED without version and heart-beat";

/// A dead letter (docs/queues.md, docs/dead-letter.md): ActiveMQ stamps `originalExpiration`
/// (0 when the message had none) and, for a STOMP NACK, no `dlqDeliveryFailureCause`; ferromq
/// gives its expiry to the dead-letter strategy instead, and always says why
/// (`dlqDeliveryFailureCause`).
const DEAD_LETTER: &str = "dead letters: no originalExpiration, a dlqDeliveryFailureCause";

/// ActiveMQ stamps a message from an MQTT publisher with its QoS (`ActiveMQ.MQTT.QoS`);
/// ferromq does not: the `persistent` header says QoS 0 or more (docs/compatibility.md).
const MQTT_QOS_HEADER: &str = "no ActiveMQ.MQTT.QoS header on a MESSAGE from MQTT";

/// The deliberate differences (docs/compatibility.md, "STOMP, measured against ActiveMQ").
const KNOWN: &[Known] = &[
    Known {
        script: "header_escaping",
        activemq: "sub1.1 <- MESSAGE [backslash:a\\\\b, colon:a\\cb, cr:a\\rb,",
        ferromq: "sub1.1 <- MESSAGE [backslash:a\\\\b, colon:a\\cb, cr:a b,",
        why: "STOMP 1.1 has no escape for CR: ActiveMQ writes 1.2's `\\r` to a 1.1 receiver \
              (an undefined escape there), ferromq a space",
    },
    Known {
        script: "mqtt_to_stomp",
        activemq: "<- MESSAGE [ActiveMQ.MQTT.QoS:0, ",
        ferromq: "<- MESSAGE [",
        why: MQTT_QOS_HEADER,
    },
    Known {
        script: "mqtt_to_stomp",
        activemq: "<- MESSAGE [ActiveMQ.MQTT.QoS:1, ",
        ferromq: "<- MESSAGE [",
        why: MQTT_QOS_HEADER,
    },
    Known {
        script: "mqtt_to_stomp",
        activemq: "<- MESSAGE [ActiveMQ.MQTT.QoS:2, ",
        ferromq: "<- MESSAGE [",
        why: MQTT_QOS_HEADER,
    },
    Known {
        script: "virtual_topic",
        activemq: "<- MESSAGE [ActiveMQ.MQTT.QoS:1, ",
        ferromq: "<- MESSAGE [",
        why: MQTT_QOS_HEADER,
    },
    Known {
        script: "nack_to_dlq",
        activemq: "original-destination:/queue/diff.nack, originalExpiration:0, ",
        ferromq: "original-destination:/queue/diff.nack, ",
        why: DEAD_LETTER,
    },
    Known {
        script: "nack_to_dlq",
        activemq: "app:x, destination:/queue/ActiveMQ.DLQ, expires:0, ",
        ferromq: "app:x, destination:/queue/ActiveMQ.DLQ, dlqDeliveryFailureCause:Delivery[1] \
                  exceeds redelivery policy limit or was refused (NACK), expires:0, ",
        why: DEAD_LETTER,
    },
    Known {
        script: "*",
        activemq: "<- CONNECTED [heart-beat:0,0, server:<server>, session:<session>, version:1.0]",
        ferromq: "<- CONNECTED [server:<server>, session:<session>]",
        why: CONNECTED_1_0,
    },
    Known {
        script: "heart_beats",
        activemq: "<- CONNECTED [heart-beat:2000,1000, server:<server>, session:<session>, \
                   version:1.0]",
        ferromq: "<- CONNECTED [server:<server>, session:<session>]",
        why: CONNECTED_1_0,
    },
    Known {
        script: "connect_versions",
        activemq: "<- ERROR [content-type:text/plain, message:<text>] <text>",
        ferromq: "<- ERROR [content-type:text/plain, message:<text>, version:1.0,1.1,1.2] <text>",
        why: VERSIONS,
    },
    Known {
        script: "header_escaping_1_0",
        activemq: "sub1.0 <- garbage header line without a colon: \"b\"",
        ferromq: "sub1.0 <- MESSAGE [destination:/topic/diff.escape10, expires:0, \
                  message-id:<message-id>, newline:a b, priority:4, subscription:s, \
                  timestamp:<timestamp>] \"newline\"",
        why: NEWLINE_1_0,
    },
    Known {
        script: "header_escaping_1_0",
        activemq: "<- MESSAGE [cr:a\\rb, ",
        ferromq: "<- MESSAGE [cr:a b, ",
        why: NEWLINE_1_0,
    },
    Known {
        script: "stomp_to_mqtt",
        activemq: "PUBLISH diff/stomp/plain AtLeastOnce",
        ferromq: "PUBLISH diff/stomp/plain AtMostOnce",
        why: AMQ_7045,
    },
    Known {
        script: "stomp_to_mqtt",
        activemq: "PUBLISH diff/stomp/persistent AtMostOnce",
        ferromq: "PUBLISH diff/stomp/persistent AtLeastOnce",
        why: AMQ_7045,
    },
    Known {
        script: "stomp_to_mqtt",
        activemq: "PUBLISH diff/stomp/headers AtLeastOnce",
        ferromq: "PUBLISH diff/stomp/headers AtMostOnce",
        why: AMQ_7045,
    },
    Known {
        script: "stomp_to_mqtt",
        activemq: "PUBLISH diff/stomp/bytes AtLeastOnce",
        ferromq: "PUBLISH diff/stomp/bytes AtMostOnce",
        why: AMQ_7045,
    },
    Known {
        script: "errors",
        activemq: "e8 <- RECEIPT [receipt-id:e] \"\"",
        ferromq: "e8 <- ERROR [content-type:text/plain, message:<text>, receipt-id:e] <text>",
        why: BAD_PREFIX,
    },
    Known {
        script: "errors",
        activemq: "e9 <- RECEIPT [receipt-id:e] \"\"",
        ferromq: "e9 <- ERROR [content-type:text/plain, message:<text>, receipt-id:e] <text>",
        why: BAD_PREFIX,
    },
    Known {
        script: "edge_case_checks",
        activemq: "number-expires closed",
        ferromq: "number-expires <- ERROR [content-type:text/plain, message:<text>, receipt-id:e] <text>",
        why: NUMBER_FORMAT,
    },
    Known {
        script: "edge_case_checks",
        activemq: "number-priority closed",
        ferromq: "number-priority <- ERROR [content-type:text/plain, message:<text>, receipt-id:e] <text>",
        why: NUMBER_FORMAT,
    },
    Known {
        script: "edge_case_checks",
        activemq: "number-timestamp closed",
        ferromq: "number-timestamp <- ERROR [content-type:text/plain, message:<text>, receipt-id:e] <text>",
        why: NUMBER_FORMAT,
    },
];

/// Why a SEND header that must be a number and is not gets an ERROR before the close.
const NUMBER_FORMAT: &str = "a SEND whose expires/priority/timestamp is not a number: ActiveMQ \
    closes the connection without a word (its NumberFormatException reaches the transport), \
    ferromq sends an ERROR saying which header, then closes (STOMP 1.2 \"ERROR\")";

/// Differences that are ferromq bugs, reported and not fixed yet: tolerated (and printed) so
/// that the rest of the comparison keeps guarding; remove an entry with its fix (a stale entry
/// fails the test).
const OPEN: &[Known] = &[];

/// ActiveMQ's transcript of `script` with the [`KNOWN`] and [`OPEN`] differences applied and ActiveMQ's
/// connections closed after an ERROR: what ferromq must answer.
///
/// STOMP 1.2 ("ERROR"): the server MUST close the connection just after an ERROR frame.
/// ActiveMQ does for a refused CONNECT and an unknown command, but goes on serving after
/// most other ERRORs; ferromq always closes. So after an ERROR on a connection, each run of
/// that connection's received lines (between two frames it sends) becomes one `closed`.
fn expected_of_ferromq(
    script: &str,
    activemq: &[String],
    used: &mut std::collections::BTreeSet<usize>,
) -> Vec<String> {
    let replaced = activemq.iter().map(|line| {
        let mut line = line.clone();
        for (i, known) in KNOWN.iter().chain(OPEN).enumerate() {
            if (known.script == script || known.script == "*") && line.contains(known.activemq) {
                line = line.replace(known.activemq, known.ferromq);
                used.insert(i);
            }
        }
        line
    });
    let mut errored: std::collections::BTreeSet<String> = Default::default();
    // Connections whose last line was a `closed` already written.
    let mut closed_run: std::collections::BTreeSet<String> = Default::default();
    let mut out = Vec::new();
    for line in replaced {
        let Some((conn, rest)) = line.split_once(' ') else {
            out.push(line);
            continue;
        };
        let conn = conn.to_owned();
        if rest.starts_with("->") {
            closed_run.remove(&conn);
            out.push(line);
            continue;
        }
        if errored.contains(&conn) {
            if closed_run.insert(conn.clone()) {
                out.push(format!("{conn} closed"));
            }
            continue;
        }
        if rest.starts_with("<- ERROR") {
            errored.insert(conn.clone());
        }
        out.push(line);
    }
    out
}

/// A line diff (longest common subsequence): ` ` both, `-` expected only, `+` ferromq only.
fn diff(expected: &[String], got: &[String]) -> String {
    let (n, m) = (expected.len(), got.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if expected[i] == got[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < n || j < m {
        if i < n && j < m && expected[i] == got[j] {
            out.push_str(&format!("    {}\n", expected[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push_str(&format!("  + {}\n", got[j]));
            j += 1;
        } else {
            out.push_str(&format!("  - {}\n", expected[i]));
            i += 1;
        }
    }
    out
}

/// The scripts of `group` that `FERROMQ_DIFF_SCRIPTS` names (all by default).
fn selected(group: &[(&'static str, scripts::Run)]) -> Vec<(&'static str, scripts::Run)> {
    let wanted = std::env::var("FERROMQ_DIFF_SCRIPTS").ok();
    let wanted: Option<Vec<String>> =
        wanted.map(|w| w.split(',').map(|s| s.trim().to_owned()).collect());
    if let Some(names) = &wanted {
        for name in names {
            assert!(
                scripts::TOPIC_SCRIPTS
                    .iter()
                    .chain(scripts::QUEUE_SCRIPTS)
                    .any(|(n, _)| n == name),
                "FERROMQ_DIFF_SCRIPTS: no script {name}"
            );
        }
    }
    group
        .iter()
        .filter(|(name, _)| wanted.as_ref().is_none_or(|w| w.iter().any(|n| n == name)))
        .copied()
        .collect()
}

async fn transcripts(target: Target, runs: &[(&'static str, scripts::Run)]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (_, run) in runs {
        let ctx = Ctx::new(target);
        run(&ctx).await;
        out.push(ctx.log.lines());
    }
    out
}

/// ferromq's STOMP connector, by name.
fn stomp_addr(broker: &TestBroker) -> SocketAddr {
    broker
        .handle
        .listener_addrs()
        .iter()
        .find(|(name, _)| name == "stomp")
        .map(|(_, addr)| *addr)
        .unwrap_or_else(|| {
            panic!(
                "ferromq serves no `stomp` connector (listeners: {:?})",
                broker.handle.listener_addrs()
            )
        })
}

/// The connection, topic and MQTT-crossing scripts, answered by ActiveMQ and ferromq, must
/// match but for [`KNOWN`] and [`OPEN`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stomp_topic_scripts_match_activemq() {
    compare("stomp_topic_scripts_match_activemq", scripts::TOPIC_SCRIPTS).await;
}

/// The queue scripts, answered by ActiveMQ and ferromq, must match but for [`KNOWN`] and
/// [`OPEN`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stomp_queue_scripts_match_activemq() {
    compare("stomp_queue_scripts_match_activemq", scripts::QUEUE_SCRIPTS).await;
}

/// Run `group`'s scripts against both brokers and compare.
async fn compare(test: &str, group: &[(&'static str, scripts::Run)]) {
    if !activemq::available(test) {
        return;
    }
    let runs = selected(group);
    if runs.is_empty() {
        return;
    }
    let only_activemq = std::env::var("FERROMQ_DIFF_ONLY").is_ok_and(|v| v == "activemq");
    let show = std::env::var("FERROMQ_DIFF_SHOW").is_ok_and(|v| v == "1");

    let amq = ActiveMq::start_with_stomp(xml, &[]);
    let amq_target = Target {
        stomp: amq.stomp.expect("ActiveMQ's STOMP connector"),
        mqtt: amq.mqtt,
    };
    let by_activemq = transcripts(amq_target, &runs).await;
    if only_activemq {
        for ((name, _), lines) in runs.iter().zip(&by_activemq) {
            eprintln!("=== {name} (ActiveMQ)\n{}\n", lines.join("\n"));
        }
        return;
    }

    let conf = tempfile::tempdir().expect("tempdir");
    let path = conf.path().join("activemq.xml");
    std::fs::write(&path, xml(0, 0)).expect("write activemq.xml");
    let ferromq = TestBroker::start(load_file(&path)).await;
    let ferromq_target = Target {
        stomp: stomp_addr(&ferromq),
        mqtt: ferromq.addr,
    };
    let by_ferromq = transcripts(ferromq_target, &runs).await;
    ferromq.shutdown().await;

    let mut report = String::new();
    let mut used = std::collections::BTreeSet::new();
    for (((name, run), activemq), ferromq) in runs.iter().zip(&by_activemq).zip(&by_ferromq) {
        let expected = expected_of_ferromq(name, activemq, &mut used);
        if show {
            eprintln!(
                "=== {name} (ActiveMQ)\n{}\n=== {name} (ferromq)\n{}\n",
                activemq.join("\n"),
                ferromq.join("\n")
            );
        }
        if &expected != ferromq {
            // ActiveMQ's own answer can race (an ERROR it writes just before closing is lost
            // to the reset when the client's next frame is still unread): a difference must
            // show again with ActiveMQ's second answer to count.
            let again = transcripts(amq_target, &[(*name, *run)]).await;
            let mut unused = std::collections::BTreeSet::new();
            if again
                .first()
                .is_some_and(|a| &expected_of_ferromq(name, a, &mut unused) == ferromq)
            {
                eprintln!(
                    "{name}: ActiveMQ answered differently once, then as ferromq does: {}",
                    diff(&expected, ferromq)
                );
                continue;
            }
            report.push_str(&format!(
                "--- {name}: `-` ActiveMQ (KNOWN and OPEN applied), `+` ferromq\n{}",
                diff(&expected, ferromq)
            ));
        }
    }
    // An entry that no longer applies is stale: the list must say what ferromq does now.
    for (i, known) in KNOWN.iter().chain(OPEN).enumerate() {
        // A `*` entry need not apply to every group of scripts.
        let ran = runs.iter().any(|(name, _)| *name == known.script);
        if ran && !used.contains(&i) {
            report.push_str(&format!(
                "--- stale entry (ActiveMQ no longer answers `{}` in {}): remove it from the \
                 list and docs/compatibility.md\n",
                known.activemq, known.script
            ));
        }
    }
    for open in OPEN
        .iter()
        .filter(|o| runs.iter().any(|(n, _)| *n == o.script))
    {
        eprintln!(
            "open difference (a ferromq bug, tolerated until fixed) in {}: ActiveMQ `{}`, \
             ferromq `{}`: {}",
            open.script, open.activemq, open.ferromq, open.why
        );
    }
    assert!(
        report.is_empty(),
        "STOMP answers differ from ActiveMQ 5.17's:\n{report}"
    );
}
