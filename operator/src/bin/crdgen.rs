//! Prints the TelemetryPipeline CRD as YAML. `make crds` writes it to `crds/`
//! and to the Helm chart's `crds/` (a unit test checks both for drift).

fn main() {
    print!("{}", telemetry_operator::crd::crd_yaml());
}
