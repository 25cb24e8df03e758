//! telemetry-fuzz: fuzz targets over every decoder and validator that reads
//! bytes a client (or, for the operator, a pod) controls, run two ways.
//!
//! ```text
//! fuzz/corpus/<target>/ ──► mutate (deterministic) ──► target::run ──► the product's own
//!        │                                                 ▲            decode + validate
//!        └──────────► libFuzzer (fuzz/libfuzzer, nightly) ─┘
//! ```
//!
//! - [`target`]: one `fn(&[u8])` per target that decodes and validates
//!   exactly as the server does, by calling the server's own functions (no
//!   second validation path), and checks what must hold of what it accepts.
//!   A target must not panic, whatever the bytes.
//! - [`mutate`]: a small deterministic mutator (bit flips, truncations,
//!   splices of corpus entries, inserted tokens) for the bounded run that
//!   `cargo test` does on the stable toolchain (`tests/bounded.rs`).
//!
//! The long runs use libFuzzer through `cargo fuzz` (nightly), from the
//! package in `fuzz/libfuzzer/`, which only wraps [`target`]: `make fuzz`
//! (`scripts/fuzz`), figures in docs/reliability.md.
//!
//! A crate of its own rather than a `fuzz` module in each product crate: the
//! targets span three crates (ingest, config, operator), and none of them
//! carries fuzzing code or the operator's dependencies into another.

pub mod mutate;
pub mod target;
