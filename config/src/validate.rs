//! Rules beyond what the types express, each error naming field and rule.
//!
//! The operator's CRD carries the same rules as schema bounds and CEL
//! expressions, so the apiserver rejects a bad pipeline up front; this module is
//! what the ingest service applies to a config file it is handed.

use std::collections::HashSet;

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::aggregation::{
    AggregationConfig, DEDUP_TTL_MAX_SECONDS, LeaderboardMember, MAX_NAMED_AGGREGATES,
    NAME_MAX_LEN, RECENT_EVENTS_MAX, RETENTION_MAX_SECONDS,
};
use crate::{Error, Result};

/// Longest event type or attribute name a filter may name.
const IDENT_MAX_LEN: usize = 128;

impl AggregationConfig {
    /// Checks every rule; the first broken one is returned.
    pub fn validate(&self) -> Result<()> {
        if !(1..=DEDUP_TTL_MAX_SECONDS).contains(&self.dedup.ttl_seconds) {
            return Err(Error::invalid(
                "dedup.ttlSeconds",
                format!("must be between 1 and {DEDUP_TTL_MAX_SECONDS}"),
            ));
        }
        if self.recent_events.per_device > RECENT_EVENTS_MAX {
            return Err(Error::invalid(
                "recentEvents.perDevice",
                format!("must be at most {RECENT_EVENTS_MAX}"),
            ));
        }
        for (i, t) in self.counters.drop_event_types.iter().enumerate() {
            check_ident(&format!("counters.dropEventTypes[{i}]"), t)?;
        }
        self.drop_device_matcher()?;

        if self.windows.len() > MAX_NAMED_AGGREGATES {
            return Err(Error::invalid(
                "windows",
                format!("at most {MAX_NAMED_AGGREGATES} windows"),
            ));
        }
        let mut names = HashSet::new();
        for (i, w) in self.windows.iter().enumerate() {
            let at = |f: &str| format!("windows[{i}].{f}");
            check_name(&at("name"), &w.name)?;
            if !names.insert(w.name.as_str()) {
                return Err(Error::invalid(at("name"), "must be unique among windows"));
            }
            if let Some(t) = &w.event_type {
                check_ident(&at("eventType"), t)?;
            }
            if w.aggregates.is_empty() {
                return Err(Error::invalid(
                    at("aggregates"),
                    "must name at least one of count, sum, min, max",
                ));
            }
            let distinct: HashSet<_> = w.aggregates.iter().collect();
            if distinct.len() != w.aggregates.len() {
                return Err(Error::invalid(at("aggregates"), "must not repeat an entry"));
            }
            check_retention(&at("retentionSeconds"), w.retention_seconds)?;
        }

        if self.leaderboards.len() > MAX_NAMED_AGGREGATES {
            return Err(Error::invalid(
                "leaderboards",
                format!("at most {MAX_NAMED_AGGREGATES} leaderboards"),
            ));
        }
        let mut names = HashSet::new();
        for (i, l) in self.leaderboards.iter().enumerate() {
            let at = |f: &str| format!("leaderboards[{i}].{f}");
            check_name(&at("name"), &l.name)?;
            if !names.insert(l.name.as_str()) {
                return Err(Error::invalid(
                    at("name"),
                    "must be unique among leaderboards",
                ));
            }
            if let Some(t) = &l.event_type {
                check_ident(&at("eventType"), t)?;
            }
            match (l.member, &l.member_attribute) {
                (LeaderboardMember::Attribute, None) => {
                    return Err(Error::invalid(
                        at("memberAttribute"),
                        "is required when member is attribute",
                    ));
                }
                (LeaderboardMember::Attribute, Some(a)) => check_ident(&at("memberAttribute"), a)?,
                (_, Some(_)) => {
                    return Err(Error::invalid(
                        at("memberAttribute"),
                        "is only allowed when member is attribute",
                    ));
                }
                (_, None) => {}
            }
            check_retention(&at("retentionSeconds"), l.retention_seconds)?;
        }
        Ok(())
    }

    /// The `counters.dropDevices` globs, compiled into one matcher.
    pub fn drop_device_matcher(&self) -> Result<GlobSet> {
        let mut set = GlobSetBuilder::new();
        for (i, pattern) in self.counters.drop_devices.iter().enumerate() {
            let field = format!("counters.dropDevices[{i}]");
            if pattern.is_empty() {
                return Err(Error::invalid(field, "must not be empty"));
            }
            let glob = Glob::new(pattern)
                .map_err(|e| Error::invalid(field, format!("is not a valid glob: {}", e.kind())))?;
            set.add(glob);
        }
        set.build()
            .map_err(|e| Error::invalid("counters.dropDevices", e.to_string()))
    }
}

fn check_name(field: &str, name: &str) -> Result<()> {
    let bytes = name.as_bytes();
    let edge_ok = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let ok = !bytes.is_empty()
        && bytes.len() <= NAME_MAX_LEN
        && bytes.iter().all(|b| edge_ok(b) || *b == b'-')
        && bytes.first().is_some_and(edge_ok)
        && bytes.last().is_some_and(edge_ok);
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!(
                "must be 1 to {NAME_MAX_LEN} lowercase letters, digits or '-', starting and ending with a letter or digit"
            ),
        ))
    }
}

fn check_ident(field: &str, value: &str) -> Result<()> {
    if value.is_empty() || value.len() > IDENT_MAX_LEN {
        return Err(Error::invalid(
            field,
            format!("must be 1 to {IDENT_MAX_LEN} characters"),
        ));
    }
    Ok(())
}

fn check_retention(field: &str, seconds: u32) -> Result<()> {
    if !(60..=RETENTION_MAX_SECONDS).contains(&seconds) {
        return Err(Error::invalid(
            field,
            format!("must be between 60 and {RETENTION_MAX_SECONDS} seconds"),
        ));
    }
    Ok(())
}

#[cfg(test)]
// Each test starts from the defaults and breaks one field at a time.
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use crate::aggregation::{LeaderboardConfig, WindowAggregate, WindowConfig};

    fn window(name: &str) -> WindowConfig {
        WindowConfig {
            name: name.into(),
            event_type: Some("purchase".into()),
            aggregates: vec![WindowAggregate::Count, WindowAggregate::Sum],
            per_hour: false,
            retention_seconds: 7200,
        }
    }

    fn leaderboard(name: &str) -> LeaderboardConfig {
        serde_yaml::from_str(&format!("name: {name}")).unwrap()
    }

    fn field_of(err: Error) -> String {
        match err {
            Error::Invalid { field, .. } => field,
            other => panic!("expected an Invalid error, got {other}"),
        }
    }

    #[test]
    fn empty_document_is_the_default_config() {
        let config = AggregationConfig::from_yaml("").unwrap();
        assert_eq!(config, AggregationConfig::default());
        assert!(config.counters.per_device && config.dedup.enabled);
        assert_eq!(config.recent_events.per_device, 20);
    }

    #[test]
    fn full_document_round_trips_through_yaml() {
        let text = r#"
counters: { perDevice: true, perEventType: false, dropEventTypes: [debug], dropDevices: ["test-*"] }
dedup: { enabled: false, ttlSeconds: 600 }
recentEvents: { perDevice: 5 }
windows:
  - { name: revenue, eventType: purchase, aggregates: [sum, count], perHour: true, retentionSeconds: 7200 }
leaderboards:
  - { name: dau, member: userId, score: count, bucket: day }
  - { name: by-region, member: attribute, memberAttribute: region, score: sum, bucket: hour }
"#;
        let config = AggregationConfig::from_yaml(text).unwrap();
        assert_eq!(
            config.windows[0].aggregates,
            [WindowAggregate::Sum, WindowAggregate::Count]
        );
        assert_eq!(
            config.leaderboards[1].member_attribute.as_deref(),
            Some("region")
        );
        assert_eq!(config.recent_events.ttl_seconds, 7 * 24 * 3600);
        let again = AggregationConfig::from_yaml(&config.to_yaml()).unwrap();
        assert_eq!(again, config);
    }

    #[test]
    fn unknown_field_is_a_parse_error_naming_it() {
        let err = AggregationConfig::from_yaml("windowz: []").unwrap_err();
        assert!(err.to_string().contains("windowz"), "{err}");
    }

    #[test]
    fn window_names_must_be_dns_labels_and_unique() {
        let mut config = AggregationConfig::default();
        config.windows = vec![window("Revenue")];
        assert_eq!(field_of(config.validate().unwrap_err()), "windows[0].name");
        config.windows = vec![window("revenue"), window("revenue")];
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("unique"), "{err}");
        assert_eq!(field_of(err), "windows[1].name");
        config.windows = vec![window("revenue"), window("-x")];
        assert_eq!(field_of(config.validate().unwrap_err()), "windows[1].name");
    }

    #[test]
    fn window_needs_aggregates_without_repeats_and_a_sane_retention() {
        let mut config = AggregationConfig::default();
        let mut w = window("w");
        w.aggregates.clear();
        config.windows = vec![w.clone()];
        assert_eq!(
            field_of(config.validate().unwrap_err()),
            "windows[0].aggregates"
        );
        w.aggregates = vec![WindowAggregate::Min, WindowAggregate::Min];
        config.windows = vec![w.clone()];
        assert_eq!(
            field_of(config.validate().unwrap_err()),
            "windows[0].aggregates"
        );
        w.aggregates = vec![WindowAggregate::Min];
        w.retention_seconds = 59;
        config.windows = vec![w];
        assert_eq!(
            field_of(config.validate().unwrap_err()),
            "windows[0].retentionSeconds"
        );
    }

    #[test]
    fn member_attribute_is_required_exactly_when_member_is_attribute() {
        let mut config = AggregationConfig::default();
        let mut l = leaderboard("x");
        l.member = LeaderboardMember::Attribute;
        config.leaderboards = vec![l.clone()];
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("required"), "{err}");
        l.member = LeaderboardMember::UserId;
        l.member_attribute = Some("region".into());
        config.leaderboards = vec![l];
        let err = config.validate().unwrap_err();
        assert_eq!(field_of(err), "leaderboards[0].memberAttribute");
    }

    #[test]
    fn bad_glob_in_drop_devices_is_named() {
        let mut config = AggregationConfig::default();
        config.counters.drop_devices = vec!["ok-*".into(), "bad[".into()];
        assert_eq!(
            field_of(config.validate().unwrap_err()),
            "counters.dropDevices[1]"
        );
    }

    #[test]
    fn drop_device_matcher_matches_globs() {
        let mut config = AggregationConfig::default();
        config.counters.drop_devices = vec!["test-*".into(), "probe-?".into()];
        let m = config.drop_device_matcher().unwrap();
        assert!(m.is_match("test-17"));
        assert!(m.is_match("probe-a"));
        assert!(!m.is_match("probe-ab"));
        assert!(!m.is_match("sensor-1"));
    }

    #[test]
    fn limits_on_dedup_ttl_and_recent_events() {
        let mut config = AggregationConfig::default();
        config.dedup.ttl_seconds = 0;
        assert_eq!(field_of(config.validate().unwrap_err()), "dedup.ttlSeconds");
        config.dedup.ttl_seconds = 60;
        config.recent_events.per_device = 1001;
        assert_eq!(
            field_of(config.validate().unwrap_err()),
            "recentEvents.perDevice"
        );
    }
}
