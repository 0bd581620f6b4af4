//! Grouped bar charts as plain SVG text: one panel per measure, one group per scenario, one bar
//! per broker, the value written above each bar so the chart can be read without a ruler.

pub struct Series {
    pub name: String,
    /// One value per group; None draws "n/a".
    pub values: Vec<Option<f64>>,
    /// Groups whose bar gets a ⚠ after its value (messages were lost); may be shorter than values.
    pub warn: Vec<bool>,
}

pub struct Panel {
    pub title: String,
    pub groups: Vec<String>,
    pub series: Vec<Series>,
    pub log_scale: bool,
}

const WIDTH: f64 = 980.0;
const PANEL_HEIGHT: f64 = 300.0;
const LEGEND_HEIGHT: f64 = 40.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 44.0;

/// Colours by broker name; others take the remaining palette in turn.
fn colour(name: &str, index: usize) -> &'static str {
    const OTHERS: [&str; 4] = ["#845ef7", "#868e96", "#f08c00", "#e64980"];
    match name {
        "ferromq" => "#d9480f",
        "mosquitto" => "#1c7ed6",
        "mosquitto-tuned" => "#74c0fc",
        "activemq" => "#2b8a3e",
        _ => OTHERS[index % OTHERS.len()],
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Short human form: 1234567 -> 1.23M, 45600 -> 45.6k, 0.25 -> 0.25.
pub fn short(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".to_owned()
    } else if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Smallest 1, 2 or 5 x 10^k not below `v` (axis maximum for a linear scale).
pub fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|c| *c >= v * (1.0 - 1e-12))
        .unwrap_or(10.0 * magnitude)
}

/// Maps values to pixel heights within a panel.
struct Scale {
    log: bool,
    lo: f64,
    hi: f64,
}

impl Scale {
    fn new(values: impl Iterator<Item = f64>, log: bool) -> Scale {
        let positives: Vec<f64> = values.filter(|v| v.is_finite() && *v > 0.0).collect();
        let max = positives.iter().copied().fold(0.0, f64::max);
        if log {
            let min = positives.iter().copied().fold(f64::INFINITY, f64::min);
            let lo = if min.is_finite() {
                10f64.powf(min.log10().floor())
            } else {
                1.0
            };
            let hi = 10f64.powf(max.max(lo * 10.0).log10().ceil());
            Scale { log, lo, hi }
        } else {
            Scale {
                log,
                lo: 0.0,
                hi: nice_ceiling(max),
            }
        }
    }

    /// Fraction of the plot height for `v` (0 at the bottom).
    fn fraction(&self, v: f64) -> f64 {
        let f = if self.log {
            if v <= 0.0 {
                return 0.0;
            }
            (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            v / self.hi
        };
        f.clamp(0.0, 1.0)
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let (a, b) = (
                self.lo.log10().round() as i32,
                self.hi.log10().round() as i32,
            );
            (a..=b).map(|e| 10f64.powi(e)).collect()
        } else {
            (0..=5).map(|i| self.hi * f64::from(i) / 5.0).collect()
        }
    }
}

fn render_panel(out: &mut String, panel: &Panel, y0: f64) {
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = PANEL_HEIGHT - TOP - BOTTOM;
    let base = y0 + TOP + plot_h;
    *out += &format!(
        "<text x=\"{LEFT}\" y=\"{:.1}\" class=\"title\">{}</text>\n",
        y0 + 20.0,
        escape(&panel.title)
    );
    let scale = Scale::new(
        panel
            .series
            .iter()
            .flat_map(|s| s.values.iter().flatten().copied()),
        panel.log_scale,
    );
    for tick in scale.ticks() {
        let y = base - scale.fraction(tick) * plot_h;
        *out += &format!(
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" class=\"grid\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" class=\"axis\" text-anchor=\"end\">{}</text>\n",
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0,
            short(tick)
        );
    }
    let groups = panel.groups.len().max(1) as f64;
    let group_w = plot_w / groups;
    let bars = panel.series.len().max(1) as f64;
    // Bars are capped in width so that a panel with few groups does not draw slabs.
    let bar_w = (group_w * 0.8 / bars).min(56.0);
    let bars_w = bar_w * bars;
    for (g, group) in panel.groups.iter().enumerate() {
        let gx = LEFT + group_w * g as f64;
        *out += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" class=\"axis\" text-anchor=\"middle\">{}</text>\n",
            gx + group_w / 2.0,
            base + 18.0,
            escape(group)
        );
        for (i, series) in panel.series.iter().enumerate() {
            let x = gx + (group_w - bars_w) / 2.0 + bar_w * i as f64;
            let cx = x + bar_w / 2.0;
            match series.values.get(g).copied().flatten() {
                Some(v) => {
                    let h = scale.fraction(v) * plot_h;
                    let warn = if series.warn.get(g).copied().unwrap_or(false) {
                        " ⚠"
                    } else {
                        ""
                    };
                    *out += &format!(
                        "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{}\">\
                         <title>{}: {}</title></rect>\
                         <text x=\"{cx:.1}\" y=\"{:.1}\" class=\"value\" text-anchor=\"middle\">{}{warn}</text>\n",
                        base - h,
                        (bar_w - 2.0).max(1.0),
                        colour(&series.name, i),
                        escape(&series.name),
                        short(v),
                        // Every other label sits higher so that neighbours do not overlap.
                        base - h - 3.0 - 10.0 * (i % 2) as f64,
                        short(v)
                    );
                }
                None => {
                    *out += &format!(
                        "<text x=\"{cx:.1}\" y=\"{:.1}\" class=\"value\" text-anchor=\"middle\">n/a</text>\n",
                        base - 3.0
                    );
                }
            }
        }
    }
    *out += &format!(
        "<line x1=\"{LEFT}\" y1=\"{base:.1}\" x2=\"{:.1}\" y2=\"{base:.1}\" class=\"axisline\"/>\n",
        LEFT + plot_w
    );
}

/// The whole chart: a legend, then the panels stacked vertically.
pub fn render(panels: &[Panel]) -> String {
    let height = LEGEND_HEIGHT + PANEL_HEIGHT * panels.len() as f64;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\">\n\
         <style>.title{{font-size:14px;font-weight:bold}} .axis{{font-size:11px;fill:#333}} \
         .value{{font-size:9px;fill:#222}} .grid{{stroke:#e9ecef}} .axisline{{stroke:#495057}} \
         .legend{{font-size:12px}}</style>\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    if let Some(first) = panels.first() {
        let mut x = LEFT;
        for (i, s) in first.series.iter().enumerate() {
            out += &format!(
                "<rect x=\"{x:.1}\" y=\"14\" width=\"14\" height=\"14\" fill=\"{}\"/>\
                 <text x=\"{:.1}\" y=\"26\" class=\"legend\">{}</text>\n",
                colour(&s.name, i),
                x + 20.0,
                escape(&s.name)
            );
            x += 40.0 + 8.0 * s.name.len() as f64;
        }
    }
    for (i, panel) in panels.iter().enumerate() {
        render_panel(&mut out, panel, LEGEND_HEIGHT + PANEL_HEIGHT * i as f64);
    }
    out += "</svg>\n";
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ceiling_rounds_up_to_1_2_5() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(1.0), 1.0);
        assert_eq!(nice_ceiling(130.0), 200.0);
        assert_eq!(nice_ceiling(420_000.0), 500_000.0);
        assert_eq!(nice_ceiling(501.0), 1000.0);
    }

    #[test]
    fn log_scale_spans_whole_decades() {
        let s = Scale::new([0.7, 95.0].into_iter(), true);
        assert_eq!((s.lo, s.hi), (0.1, 100.0));
        assert_eq!(s.ticks().len(), 4);
        assert!((s.fraction(1.0) - 1.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn one_bar_per_value_and_na_for_missing() {
        let panel = Panel {
            title: "T <1>".to_owned(),
            groups: vec!["a".to_owned(), "b".to_owned()],
            series: vec![
                Series {
                    name: "ferromq".to_owned(),
                    values: vec![Some(10.0), Some(20.0)],
                    warn: vec![false, true],
                },
                Series {
                    name: "mosquitto".to_owned(),
                    values: vec![Some(5.0), None],
                    warn: vec![],
                },
            ],
            log_scale: false,
        };
        let svg = render(&[panel]);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        // 1 background + 2 legend swatches + 3 bars
        assert_eq!(svg.matches("<rect").count(), 6);
        assert_eq!(svg.matches(">n/a<").count(), 1);
        assert!(svg.contains("T &lt;1&gt;"));
        assert_eq!(svg.matches(" ⚠<").count(), 1);
    }

    #[test]
    fn short_numbers() {
        assert_eq!(short(1_234_567.0), "1.23M");
        assert_eq!(short(45_600.0), "45.6k");
        assert_eq!(short(250.0), "250");
        assert_eq!(short(0.25), "0.25");
        assert_eq!(short(0.0), "0");
    }
}
