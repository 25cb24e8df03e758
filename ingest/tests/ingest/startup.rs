//! What the server says about itself when it comes up.

use std::time::Duration;

use telemetry_proto::v1::telemetry_ingest_client::TelemetryIngestClient;
use tokio::net::TcpStream;

use crate::support::{IngestProcess, Redis, packet, pipeline};

/// `IngestProcess::spawn` asks for port 0 for both gRPC and HTTP and takes
/// the addresses from the startup log line alone: they must be the bound
/// ones, not the `:0` asked for.
#[tokio::test]
async fn startup_log_names_the_bound_ports_when_asked_for_port_zero() {
    let redis = Redis::start();
    let p = pipeline("startup-log");
    let ingest = IngestProcess::spawn(&redis.url(), &p, &[]).await;
    for addr in [ingest.grpc, ingest.http] {
        assert!(addr.ip().is_loopback(), "{addr}");
        assert_ne!(addr.port(), 0, "the startup log names {addr}");
        TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("nothing accepts on {addr}: {e}"));
    }
    // They are the server's: HTTP answers readiness, gRPC takes events.
    ingest.wait_ready(Duration::from_secs(20)).await;
    let mut client = TelemetryIngestClient::connect(format!("http://{}", ingest.grpc))
        .await
        .unwrap();
    let ack = client
        .stream_packets(tokio_stream::iter(vec![packet("d-1", "e-1")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.accepted, 1);
}
