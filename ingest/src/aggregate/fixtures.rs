//! Test fixtures of the aggregation modules: events, settings, and the
//! amount a plan writes to one field.

use std::collections::HashSet;

use bytes::Bytes;
use telemetry_config::AggregationConfig;

use super::{OpKind, Plan, Settings, Writes};
use crate::event::Event;

pub(super) const T: i64 = 1_700_000_000_000; // 22:13:20 UTC

pub(super) fn event(device: &str, id: Option<&str>, value: f64) -> Event {
    Event {
        device_id: device.into(),
        timestamp: T,
        payload: Bytes::new(),
        event_type: "purchase".into(),
        event_id: id.map(Into::into),
        user_id: Some("u1".into()),
        value,
        attributes: [("region".to_string(), "eu".to_string())].into(),
    }
}

pub(super) fn settings(f: impl FnOnce(&mut AggregationConfig)) -> Settings {
    let mut c = AggregationConfig::default();
    f(&mut c);
    Settings::new(c).unwrap()
}

pub(super) fn amount_in(w: &Writes, kind: OpKind, key: &str, field: &str) -> Option<f64> {
    w.groups
        .iter()
        .filter(|g| g.kind == kind && g.key == key)
        .flat_map(|g| g.fields.iter())
        .find(|(f, _)| *f == field)
        .map(|&(_, x)| x)
}

pub(super) fn amount(plan: &Plan, kind: OpKind, key: &str, field: &str) -> Option<f64> {
    amount_in(&plan.writes(&HashSet::new()), kind, key, field)
}
