//! The bounded run of every fuzz target, on the stable toolchain: its seed
//! corpus (`fuzz/corpus/<target>/`), then [`CASES`] deterministic mutations
//! of it. A panic fails the test with the target, the case and the input in
//! hex; `make fuzz` runs the same targets for long under libFuzzer.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use telemetry_fuzz::mutate::{Rng, mutate};
use telemetry_fuzz::target::{TARGETS, Target};

/// Mutated inputs per target: a few seconds per target in a debug build.
const CASES: usize = 20_000;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut entries: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("readable corpus directory").path();
            let data = std::fs::read(&path).expect("readable corpus file");
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                data,
            )
        })
        .collect();
    entries.sort();
    entries
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs one input; a panic becomes an error naming the input.
fn run_one(target: &Target, what: &str, data: &[u8]) -> Result<(), String> {
    catch_unwind(AssertUnwindSafe(|| (target.run)(data))).map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!(
            "target {} panicked on {what}: {message}\n  input ({} bytes, hex): {}\n  \
             as text: {:?}",
            target.name,
            data.len(),
            hex(data),
            String::from_utf8_lossy(data)
        )
    })
}

fn bounded_run(target: &Target) {
    let seeds = corpus(target.name);
    assert!(
        !seeds.is_empty(),
        "{} has no seed corpus",
        corpus_dir(target.name).display()
    );
    let mut failures = Vec::new();
    for (name, data) in &seeds {
        failures.extend(run_one(target, &format!("corpus file {name}"), data).err());
    }
    let inputs: Vec<Vec<u8>> = seeds.into_iter().map(|(_, d)| d).collect();
    let mut rng = Rng::new(target.name.len() as u64 ^ 0x5eed);
    for case in 0..CASES {
        let data = mutate(&mut rng, &inputs, target.tokens);
        failures.extend(run_one(target, &format!("case {case}"), &data).err());
        if failures.len() >= 5 {
            break;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn grpc_packet_survives_its_corpus_and_mutations() {
    bounded_run(telemetry_fuzz::target::by_name("grpc_packet").unwrap());
}

#[test]
fn grpc_batch_survives_its_corpus_and_mutations() {
    bounded_run(telemetry_fuzz::target::by_name("grpc_batch").unwrap());
}

#[test]
fn http_event_survives_its_corpus_and_mutations() {
    bounded_run(telemetry_fuzz::target::by_name("http_event").unwrap());
}

#[test]
fn http_batch_survives_its_corpus_and_mutations() {
    bounded_run(telemetry_fuzz::target::by_name("http_batch").unwrap());
}

#[test]
fn query_params_survive_their_corpus_and_mutations() {
    bounded_run(telemetry_fuzz::target::by_name("query_params").unwrap());
}

#[test]
fn aggregation_config_survives_its_corpus_and_mutations() {
    bounded_run(telemetry_fuzz::target::by_name("aggregation_config").unwrap());
}

#[test]
fn metrics_text_survives_its_corpus_and_mutations() {
    bounded_run(telemetry_fuzz::target::by_name("metrics_text").unwrap());
}

/// Every target has a seed corpus and a libFuzzer binary, and every
/// libFuzzer binary is a target: `make fuzz` runs what this file tests.
#[test]
fn every_target_has_a_corpus_and_a_libfuzzer_binary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut binaries: Vec<String> = std::fs::read_dir(root.join("libfuzzer/fuzz_targets"))
        .expect("fuzz/libfuzzer/fuzz_targets")
        .map(|e| {
            let path = e.unwrap().path();
            path.file_stem().unwrap().to_string_lossy().into_owned()
        })
        .collect();
    binaries.sort();
    let mut names: Vec<String> = TARGETS.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    assert_eq!(binaries, names);
    let manifest = std::fs::read_to_string(root.join("libfuzzer/Cargo.toml")).unwrap();
    for t in TARGETS {
        assert!(
            manifest.contains(&format!("name = \"{}\"", t.name)),
            "{} missing from fuzz/libfuzzer/Cargo.toml",
            t.name
        );
        assert!(!corpus(t.name).is_empty(), "{} has no seeds", t.name);
    }
}
