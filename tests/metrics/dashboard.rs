//! `examples/grafana/ferromq-dashboard.json` queries only metrics a live broker exports.

use crate::render::scrape_core;
use crate::support::live::LiveBroker;
use crate::support::BrokerXml;

/// Every `ferromq_...` name in the dashboard's PromQL expressions.
fn dashboard_metric_names() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/grafana/ferromq-dashboard.json"
    );
    let text = std::fs::read_to_string(path).expect("the dashboard");
    let json: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    collect_exprs(&json, &mut exprs);
    assert!(exprs.len() > 10, "the dashboard has its queries: {exprs:?}");
    let mut names: Vec<String> = exprs
        .iter()
        .flat_map(|e| {
            e.match_indices("ferromq_").map(move |(at, _)| {
                e[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

fn collect_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    ("query", serde_json::Value::String(e)) if e.contains("ferromq_") => {
                        out.push(e.clone())
                    }
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_exported() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A store (the store panels) and hot reload (the reload panel) on.
    let xml = BrokerXml::new().kahadb(dir.path()).mqtt(0, &[]).build();
    let live = LiveBroker::start(&xml, false).await;
    let exposition = scrape_core(live.handle.core());
    let missing: Vec<String> = dashboard_metric_names()
        .into_iter()
        .filter(|name| !exposition.has(name) && !exposition.types.contains_key(name))
        .collect();
    assert!(missing.is_empty(), "not exported: {missing:?}");
    live.shutdown().await;
}
