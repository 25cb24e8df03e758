//! How `telemetryctl` prints answers: aligned tables, raw JSON, and a bar
//! chart for window series.

use serde::Serialize;
use telemetry_proto::json::{
    Counters, DeviceCount, EventJson, Leaderboard, Stats, Window, WindowPoint,
};

use crate::cli::QueryTarget;

/// JSON when asked for, else the table.
pub fn print<T: Serialize>(target: &QueryTarget, value: &T, table: impl FnOnce() -> String) {
    if target.json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).expect("answers serialise")
        );
    } else {
        print!("{}", table());
    }
}

/// Left-aligned first column, right-aligned others.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            let pad = w - cell.chars().count();
            if i == 0 {
                out.push_str(cell);
                out.push_str(&" ".repeat(pad));
            } else {
                out.push_str(&" ".repeat(pad));
                out.push_str(cell);
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

pub fn devices_table(rows: &[DeviceCount]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|d| vec![d.device_id.clone(), d.count.to_string()])
        .collect();
    table(&["DEVICE", "EVENTS"], &rows)
}

pub fn counters_table(c: &Counters) -> String {
    let mut rows: Vec<Vec<String>> = c
        .counters
        .iter()
        .map(|c| vec![c.event_type.clone(), c.count.to_string()])
        .collect();
    rows.push(vec!["(total)".into(), c.total.to_string()]);
    table(&["EVENT TYPE", "EVENTS"], &rows)
}

pub fn leaderboard_table(l: &Leaderboard) -> String {
    let rows: Vec<Vec<String>> = l
        .entries
        .iter()
        .map(|e| vec![e.rank.to_string(), e.member.clone(), format_score(e.score)])
        .collect();
    format!(
        "{} (bucket {})\n{}",
        l.name,
        l.bucket,
        table(&["RANK", "MEMBER", "SCORE"], &rows)
    )
}

fn format_score(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.3}")
    }
}

/// One bar per minute, scaled to the largest.
pub fn window_chart(w: &Window, by_sum: bool) -> String {
    const WIDTH: f64 = 50.0;
    let value = |p: &WindowPoint| if by_sum { p.sum } else { p.count as f64 };
    let peak = w.points.iter().map(value).fold(0.0_f64, f64::max);
    let mut out = format!(
        "{} — {} per minute\n",
        w.name,
        if by_sum { "sum" } else { "count" }
    );
    for p in &w.points {
        let v = value(p);
        let len = if peak > 0.0 {
            (v / peak * WIDTH).round() as usize
        } else {
            0
        };
        let minute = p.minute.rem_euclid(86_400);
        out.push_str(&format!(
            "{:02}:{:02}  {:<50}  {}\n",
            minute / 3600,
            minute % 3600 / 60,
            "█".repeat(len),
            format_score(v)
        ));
    }
    out.push_str(&format!(
        "total: count {}  sum {}{}{}\n",
        w.total.count,
        format_score(w.total.sum),
        w.total
            .min
            .map(|m| format!("  min {}", format_score(m)))
            .unwrap_or_default(),
        w.total
            .max
            .map(|m| format!("  max {}", format_score(m)))
            .unwrap_or_default(),
    ));
    out
}

pub fn recent_table(events: &[EventJson]) -> String {
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                e.timestamp.to_string(),
                e.event_type.clone(),
                e.event_id.clone(),
                format_score(e.value),
                e.payload
                    .as_ref()
                    .map(|p| p.to_string())
                    .unwrap_or_default()
                    .chars()
                    .take(40)
                    .collect(),
            ]
        })
        .collect();
    table(
        &["TIMESTAMP", "TYPE", "EVENT ID", "VALUE", "PAYLOAD"],
        &rows,
    )
}

pub fn stats_table(s: &Stats) -> String {
    let rows = vec![
        vec![
            "events stored (pipeline)".into(),
            s.events_total.to_string(),
        ],
        vec!["devices".into(), s.devices.to_string()],
        vec!["received (this pod)".into(), s.received_total.to_string()],
        vec!["accepted (this pod)".into(), s.accepted_total.to_string()],
        vec!["rejected (this pod)".into(), s.rejected_total.to_string()],
        vec![
            "duplicates (this pod)".into(),
            s.duplicates_total.to_string(),
        ],
        vec![
            "accepted/s (last 10 s)".into(),
            format!("{:.0}", s.accepted_per_second),
        ],
        vec![
            "queue".into(),
            format!("{} / {}", s.queue_depth, s.queue_capacity),
        ],
        vec![
            "redis".into(),
            if s.redis_ok {
                "ok".into()
            } else {
                "UNREACHABLE".into()
            },
        ],
    ];
    table(&["STAT", "VALUE"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["A", "N"],
            &[
                vec!["long-name".into(), "5".into()],
                vec!["x".into(), "123".into()],
            ],
        );
        assert_eq!(t, "A            N\nlong-name    5\nx          123\n");
    }

    #[test]
    fn window_chart_scales_bars_to_the_peak() {
        let w = Window {
            name: "w".into(),
            points: vec![
                WindowPoint {
                    minute: 60,
                    count: 10,
                    ..Default::default()
                },
                WindowPoint {
                    minute: 120,
                    count: 5,
                    ..Default::default()
                },
                WindowPoint {
                    minute: 180,
                    count: 0,
                    ..Default::default()
                },
            ],
            total: WindowPoint {
                count: 15,
                ..Default::default()
            },
        };
        let chart = window_chart(&w, false);
        let bars: Vec<usize> = chart
            .lines()
            .skip(1)
            .take(3)
            .map(|l| l.matches('█').count())
            .collect();
        assert_eq!(bars, [50, 25, 0]);
        assert!(chart.contains("total: count 15"));
    }
}
