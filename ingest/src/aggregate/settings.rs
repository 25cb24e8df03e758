//! The aggregation settings, with the filters compiled for the hot path.

use std::collections::HashSet;

use globset::GlobSet;
use telemetry_config::AggregationConfig;

use crate::event::Event;

/// The aggregation settings, with filters compiled for the hot path.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: AggregationConfig,
    drop_devices: GlobSet,
    drop_types: HashSet<String>,
}

impl Settings {
    pub fn new(config: AggregationConfig) -> telemetry_config::Result<Self> {
        config.validate()?;
        Ok(Settings {
            drop_devices: config.drop_device_matcher()?,
            drop_types: config.counters.drop_event_types.iter().cloned().collect(),
            config,
        })
    }

    /// Whether the filters drop this event before any aggregation.
    pub fn drops(&self, event: &Event) -> bool {
        (!self.drop_types.is_empty() && self.drop_types.contains(&event.event_type))
            || (!self.drop_devices.is_empty() && self.drop_devices.is_match(&event.device_id))
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings::new(AggregationConfig::default()).expect("defaults are valid")
    }
}

#[cfg(test)]
mod tests {
    use crate::aggregate::fixtures::*;
    use crate::aggregate::{Plan, Slot};
    use crate::keys::Keys;

    #[test]
    fn filters_drop_before_anything_is_planned() {
        let keys = Keys::new("p");
        let s = settings(|c| {
            c.counters.drop_devices = vec!["test-*".into()];
            c.counters.drop_event_types = vec!["debug".into()];
        });
        let mut debug = event("a", None, 0.0);
        debug.event_type = "debug".into();
        let plan = Plan::build(&[event("test-1", None, 0.0), debug], &s, &keys);
        assert_eq!(plan.slots, [Slot::Dropped; 2]);
        assert!(plan.is_empty());
    }
}
