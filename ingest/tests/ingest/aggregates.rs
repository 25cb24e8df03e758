//! Aggregations end to end: events in through the real server, queries out.
