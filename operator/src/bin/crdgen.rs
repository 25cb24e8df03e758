//! Prints the TelemetryPipeline CRD as YAML: `cargo run -p telemetry-operator
//! --bin crdgen > crds/telemetrypipelines.yaml` (a unit test checks for drift).

fn main() {
    print!("{}", telemetry_operator::crd::crd_yaml());
}
