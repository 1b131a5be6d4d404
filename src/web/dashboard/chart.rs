//! The dashboard's per-minute charts as inline SVG (no JavaScript): a y axis
//! with unit-labelled ticks, a UTC time axis, the policy's thresholds as
//! dashed lines, a marker where each deployment went live (the current one
//! and the last known good named), and the incident window shaded. Pure:
//! everything it draws is passed in.

use std::fmt::Write;

use crate::core::clock::Timestamp;
use crate::core::html::escape;

/// What a deployment marker stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Current,
    LastKnownGood,
    Other,
}

/// A deployment going live at `minute` (ms since the epoch / 60 000).
#[derive(Clone, Debug)]
pub struct Marker {
    pub minute: i64,
    pub label: String,
    pub role: Role,
}

/// One chart: `points[i]` is minute `start + i`; `None` where there was no data.
pub struct Chart<'a> {
    pub title: &'a str,
    /// Appended to tick labels: `%`, ` ms`.
    pub unit: &'a str,
    pub start: i64,
    pub points: &'a [Option<f64>],
    /// Named horizontal lines, e.g. `("warning", 2.0)`.
    pub thresholds: &'a [(&'a str, f64)],
    pub markers: &'a [Marker],
    /// Minutes `[from, to)` shaded as the incident window.
    pub shaded: Option<(i64, i64)>,
}

const W: f64 = 640.0;
const H: f64 = 220.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 30.0;

/// Ticks 0, step, 2·step… covering `max`, with a 1-2-5 step giving 3-6 ticks.
pub fn ticks(max: f64) -> Vec<f64> {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let raw = max / 4.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let n = (max / step).ceil() as usize;
    (0..=n).map(|i| i as f64 * step).collect()
}

fn fmt_value(v: f64) -> String {
    if v == v.trunc() {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// `HH:MM` of a minute, in UTC.
fn clock_time(minute: i64) -> String {
    let iso = Timestamp::from_millis(minute * 60_000).to_rfc3339();
    iso.get(11..16).unwrap_or("??:??").to_string()
}

/// The chart as an `<svg>` that scales to its container's width.
pub fn render(c: &Chart<'_>) -> String {
    let n = c.points.len().max(2);
    let highest = c.points.iter().flatten().fold(0.0f64, |a, b| a.max(*b));
    let top_threshold = c.thresholds.iter().map(|t| t.1).fold(0.0f64, f64::max);
    let ticks = ticks((highest * 1.1).max(top_threshold * 1.2));
    let max = *ticks.last().unwrap_or(&1.0);
    let x = |minute: f64| LEFT + (W - LEFT - RIGHT) * (minute - c.start as f64) / (n - 1) as f64;
    let y = |v: f64| H - BOTTOM - (H - BOTTOM - TOP) * (v / max).min(1.0);
    let mut s = String::new();
    let t = escape(c.title);
    let _ = write!(
        s,
        "<svg role=\"img\" aria-label=\"{t}\" viewBox=\"0 0 {W} {H}\" preserveAspectRatio=\"xMidYMid meet\" class=\"chart\"><title>{t}</title>\
         <text x=\"{LEFT}\" y=\"18\" font-size=\"13\" font-weight=\"600\" fill=\"#1d2330\">{t}</text>"
    );
    if let Some((from, to)) = c.shaded {
        let (a, b) = (
            x(from.max(c.start) as f64),
            x((to.min(c.start + n as i64 - 1)) as f64),
        );
        if to > c.start && from < c.start + n as i64 {
            // At least a few pixels wide, so an incident of this minute shows.
            let width = (b - a).max(4.0);
            let a = a.min(W - RIGHT - width);
            let _ = write!(
                s,
                "<rect class=\"incident\" x=\"{a:.1}\" y=\"{TOP}\" width=\"{width:.1}\" height=\"{:.1}\" fill=\"#fde7e4\"><title>incident window</title></rect>",
                H - TOP - BOTTOM
            );
        }
    }
    // Y axis: grid lines and unit-labelled ticks.
    for v in &ticks {
        let yy = y(*v);
        let _ = write!(
            s,
            "<line x1=\"{LEFT}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"#e4e7ec\"/>\
             <text class=\"ytick\" x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"#5a6275\">{}{}</text>",
            W - RIGHT,
            LEFT - 6.0,
            yy + 4.0,
            fmt_value(*v),
            escape(c.unit)
        );
    }
    // X axis: every 15 minutes, in UTC.
    let end = c.start + n as i64 - 1;
    for m in c.start..=end {
        // Quarter hours, and the last minute (named with the zone) unless a
        // quarter-hour label would collide with it.
        if (m % 15 == 0 && end - m >= 8) || m == end {
            let xx = x(m as f64);
            let label = if m == end {
                format!("{} UTC", clock_time(m))
            } else {
                clock_time(m)
            };
            let anchor = if m == end { "end" } else { "middle" };
            let _ = write!(
                s,
                "<line x1=\"{xx:.1}\" y1=\"{b:.1}\" x2=\"{xx:.1}\" y2=\"{:.1}\" stroke=\"#c8ccd4\"/>\
                 <text class=\"xtick\" x=\"{xx:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"{anchor}\" fill=\"#5a6275\">{label}</text>",
                H - BOTTOM + 4.0,
                H - 10.0,
                b = H - BOTTOM
            );
        }
    }
    // Thresholds.
    for (name, v) in c.thresholds {
        let yy = y(*v);
        let color = if *name == "critical" {
            "#b3261e"
        } else {
            "#b26a00"
        };
        let _ = write!(
            s,
            "<line class=\"threshold\" x1=\"{LEFT}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"{color}\" stroke-dasharray=\"5 4\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\" fill=\"{color}\">{} {}{}</text>",
            W - RIGHT,
            W - RIGHT - 2.0,
            yy - 3.0,
            escape(name),
            fmt_value(*v),
            escape(c.unit)
        );
    }
    // Deployment markers.
    for m in c
        .markers
        .iter()
        .filter(|m| m.minute >= c.start && m.minute <= end)
    {
        let xx = x(m.minute as f64);
        let (color, role) = match m.role {
            Role::Current => ("#1d4ed8", " (current)"),
            Role::LastKnownGood => ("#137333", " (last known good)"),
            Role::Other => ("#5a6275", ""),
        };
        // Labels right of the line, or left of it near the right edge.
        let (tx, anchor) = if xx > W * 0.6 {
            (xx - 3.0, "end")
        } else {
            (xx + 3.0, "start")
        };
        let _ = write!(
            s,
            "<line class=\"deploy\" x1=\"{xx:.1}\" y1=\"{TOP}\" x2=\"{xx:.1}\" y2=\"{:.1}\" stroke=\"{color}\" stroke-width=\"1.5\"/>\
             <text x=\"{tx:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"{anchor}\" fill=\"{color}\">{}{role}</text>",
            H - BOTTOM,
            TOP + 10.0,
            escape(&m.label)
        );
    }
    // The series: a line broken at gaps, a dot on every measured minute.
    let (mut seg, mut lines, mut dots) = (String::new(), String::new(), String::new());
    let mut flush = |seg: &mut String| {
        if !seg.is_empty() {
            let _ = write!(
                lines,
                "<path d=\"{}\" fill=\"none\" stroke=\"#1d2330\" stroke-width=\"2\"/>",
                std::mem::take(seg)
            );
        }
    };
    for (i, p) in c.points.iter().enumerate() {
        match p {
            Some(v) => {
                let (xx, yy) = (x((c.start + i as i64) as f64), y(*v));
                let _ = write!(
                    seg,
                    "{}{xx:.1},{yy:.1}",
                    if seg.is_empty() { "M" } else { " L" }
                );
                let _ = write!(
                    dots,
                    "<circle cx=\"{xx:.1}\" cy=\"{yy:.1}\" r=\"2.5\" fill=\"#1d2330\"/>"
                );
            }
            None => flush(&mut seg),
        }
    }
    flush(&mut seg);
    s.push_str(&lines);
    s.push_str(&dots);
    if c.points.iter().all(Option::is_none) {
        s.push_str("<text x=\"50%\" y=\"55%\" text-anchor=\"middle\" fill=\"#5a6275\" font-size=\"13\">no data</text>");
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(points: &[Option<f64>]) -> String {
        render(&Chart {
            title: "Error rate",
            unit: "%",
            start: 29_926_000,
            points,
            thresholds: &[("warning", 2.0), ("critical", 5.0)],
            markers: &[],
            shaded: None,
        })
    }

    #[test]
    fn ticks_are_round_and_cover_the_maximum() {
        assert_eq!(ticks(6.0), [0.0, 2.0, 4.0, 6.0]);
        assert_eq!(ticks(1200.0), [0.0, 500.0, 1000.0, 1500.0]);
        assert_eq!(ticks(0.0), [0.0, 0.5, 1.0]);
        assert_eq!(ticks(37.0), [0.0, 10.0, 20.0, 30.0, 40.0]);
    }

    #[test]
    fn lines_break_at_gaps_and_lone_points_show() {
        let svg = chart(&[Some(1.0), Some(2.0), None, Some(3.0), None]);
        assert_eq!(svg.matches("<path").count(), 2, "{svg}");
        assert_eq!(svg.matches("<circle").count(), 3);
        assert!(!svg.contains("no data"));
        assert!(chart(&[None, None]).contains("no data"));
    }

    #[test]
    fn axes_thresholds_markers_and_the_incident_window_are_drawn() {
        let start = 29_926_000; // a whole quarter hour
        let points: Vec<Option<f64>> = (0..60)
            .map(|i| Some(if i < 40 { 0.5 } else { 30.0 }))
            .collect();
        let svg = render(&Chart {
            title: "Error rate",
            unit: "%",
            start,
            points: &points,
            thresholds: &[("warning", 2.0), ("critical", 5.0)],
            markers: &[
                Marker {
                    minute: start + 5,
                    label: "dpl_good".into(),
                    role: Role::LastKnownGood,
                },
                Marker {
                    minute: start + 40,
                    label: "dpl_bad".into(),
                    role: Role::Current,
                },
            ],
            shaded: Some((start + 45, start + 60)),
        });
        assert!(svg.contains(">0%<") && svg.contains(">30%<"), "{svg}");
        assert!(svg.contains(">warning 2%<") && svg.contains(">critical 5%<"));
        assert_eq!(svg.matches("class=\"threshold\"").count(), 2);
        assert!(svg.contains("dpl_bad (current)") && svg.contains("dpl_good (last known good)"));
        assert_eq!(svg.matches("class=\"incident\"").count(), 1);
        // Starts 2026-11-24 22:40 UTC: quarter-hour ticks, the last names the zone.
        assert!(
            svg.contains(">22:45<") && svg.contains(">23:39 UTC<"),
            "{svg}"
        );
        assert!(!svg.contains("width=\"520\""), "scales to its container");
    }

    #[test]
    fn titles_units_and_labels_are_escaped() {
        let svg = render(&Chart {
            title: "<script>",
            unit: "<u>",
            start: 0,
            points: &[Some(1.0)],
            thresholds: &[],
            markers: &[Marker {
                minute: 0,
                label: "<b>".into(),
                role: Role::Other,
            }],
            shaded: None,
        });
        assert!(!svg.contains("<script>") && !svg.contains("<u>") && !svg.contains("<b>"));
    }
}
