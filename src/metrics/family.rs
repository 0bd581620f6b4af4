//! A metric family read at scrape time, and its encoding through `prometheus-client`.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

/// Which Prometheus type a family has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only grows; exposed with the `_total` suffix.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets, `_sum` and `_count`.
    Histogram,
}

/// A value of one labelled series.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A counter or a gauge.
    Number(f64),
    /// A histogram: per-bucket (not cumulative) counts with their upper bounds, the sum of
    /// observations and their count.
    Histogram {
        buckets: Vec<(f64, u64)>,
        sum: f64,
        count: u64,
    },
}

/// One series of a family: its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Vec<(&'static str, String)>,
    pub value: Value,
}

/// A metric family: name (without the `ferromq_` prefix, the unit or `_total`), help, type,
/// unit and series.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub unit: Option<&'static str>,
    pub samples: Vec<Sample>,
}

impl Family {
    pub fn new(name: &'static str, help: &'static str, kind: Kind) -> Family {
        Family {
            name,
            help,
            kind,
            unit: None,
            samples: Vec::new(),
        }
    }

    /// An unlabelled counter.
    pub fn counter(name: &'static str, help: &'static str, value: u64) -> Family {
        Family::new(name, help, Kind::Counter).sample(vec![], value)
    }

    /// An unlabelled gauge.
    pub fn gauge(name: &'static str, help: &'static str, value: f64) -> Family {
        let mut family = Family::new(name, help, Kind::Gauge);
        family.samples.push(Sample {
            labels: vec![],
            value: Value::Number(value),
        });
        family
    }

    /// The family's values are in bytes (the name gets `_bytes`).
    pub fn unit_bytes(mut self) -> Family {
        self.unit = Some("bytes");
        self
    }

    /// The family's values are in seconds (the name gets `_seconds`).
    pub fn unit_seconds(mut self) -> Family {
        self.unit = Some("seconds");
        self
    }

    /// Add a series with `labels` and an integer value.
    pub fn sample(mut self, labels: Vec<(&'static str, String)>, value: u64) -> Family {
        self.samples.push(Sample {
            labels,
            value: Value::Number(value as f64),
        });
        self
    }

    /// Add a series with one label.
    pub fn with(self, key: &'static str, label: &str, value: u64) -> Family {
        self.sample(vec![(key, label.to_owned())], value)
    }

    /// Add a histogram series.
    pub fn histogram(
        mut self,
        labels: Vec<(&'static str, String)>,
        buckets: Vec<(f64, u64)>,
        sum: f64,
        count: u64,
    ) -> Family {
        self.samples.push(Sample {
            labels,
            value: Value::Histogram {
                buckets,
                sum,
                count,
            },
        });
        self
    }
}

/// The families, owned by the collector `prometheus-client` calls back on encoding.
#[derive(Debug)]
struct Snapshot(Vec<Family>);

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in &self.0 {
            let unit = family.unit.map(|u| match u {
                "bytes" => Unit::Bytes,
                "seconds" => Unit::Seconds,
                other => Unit::Other(other.to_owned()),
            });
            let metric_type = match family.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
                Kind::Histogram => MetricType::Histogram,
            };
            let mut metric =
                encoder.encode_descriptor(family.name, family.help, unit.as_ref(), metric_type)?;
            for sample in &family.samples {
                let labels: Vec<(&str, &str)> = sample
                    .labels
                    .iter()
                    .map(|(k, v)| (*k, v.as_str()))
                    .collect();
                let mut series = metric.encode_family(&labels)?;
                match (&sample.value, family.kind) {
                    (Value::Number(v), Kind::Counter) => {
                        series.encode_counter::<NoLabelSet, _, u64>(&(*v as u64), None)?
                    }
                    (Value::Number(v), _) => series.encode_gauge(v)?,
                    (
                        Value::Histogram {
                            buckets,
                            sum,
                            count,
                        },
                        _,
                    ) => series.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)?,
                }
            }
        }
        Ok(())
    }
}

/// The families in the Prometheus text format, each name prefixed `ferromq_`.
pub fn encode(families: Vec<Family>) -> String {
    let mut registry = Registry::with_prefix("ferromq");
    registry.register_collector(Box::new(Snapshot(families)));
    let mut out = String::new();
    // Writing to a String cannot fail; an encoder error would be a bug in a family above.
    if prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).is_err() {
        tracing::error!("metrics: encoding failed");
    }
    out
}
