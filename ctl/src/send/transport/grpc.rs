//! A call over gRPC: a client stream of packets (`StreamPackets`) or one
//! unary batch (`SendBatch`), answered by one `Ack`.
//!
//! The generator's events are already encoded `Packet`s, so the call sends
//! those bytes as they are (`RawCodec` does not re-encode); a batch is
//! only framed as the `packets` field of a `PacketBatch`.

use std::path::Path;

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use telemetry_proto::v1::Ack;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use super::Failure;
use crate::cli::GrpcMode;
use crate::credential::ApiKey;
use crate::send::report::Tally;
use crate::{Error, Result};

const STREAM_PACKETS: &str = "/telemetry.v1.TelemetryIngest/StreamPackets";
const SEND_BATCH: &str = "/telemetry.v1.TelemetryIngest/SendBatch";
/// Largest message sent: a batch of large events.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// A gRPC connection, and the call it makes.
#[derive(Clone)]
pub struct Client {
    grpc: tonic::client::Grpc<Channel>,
    mode: GrpcMode,
    /// `authorization` metadata of each call (`--api-key`).
    authorization: Option<AsciiMetadataValue>,
}

impl Client {
    /// Connects; an `https://` URL with TLS, verified against `ca` (or the
    /// system store); every call carries `key` if given.
    pub async fn connect(
        url: &str,
        mode: GrpcMode,
        ca: Option<&Path>,
        key: Option<&ApiKey>,
    ) -> Result<Self> {
        let authorization = key
            .map(|k| {
                k.bearer().parse().map_err(|_| {
                    Error::InvalidFlag("--api-key: not usable as gRPC metadata".into())
                })
            })
            .transpose()?;
        let mut endpoint =
            Channel::from_shared(url.to_string()).map_err(|source| Error::GrpcUrl {
                url: url.to_string(),
                source,
            })?;
        if crate::tls::is_https(url) {
            endpoint = endpoint
                .tls_config(crate::tls::grpc_config(ca)?)
                .map_err(|source| Error::Connect {
                    url: url.to_string(),
                    source,
                })?;
        }
        let channel =
            endpoint
                .connect()
                .await
                .map_err(|source| match crate::tls::untrusted(&source) {
                    Some(detail) => Error::Untrusted {
                        url: url.to_string(),
                        detail,
                    },
                    None => Error::Connect {
                        url: url.to_string(),
                        source,
                    },
                })?;
        let grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Client {
            grpc,
            mode,
            authorization,
        })
    }

    /// One attempt: the whole call's tally, or how far it got.
    pub async fn send(&mut self, events: &[Bytes]) -> Result<Tally, Failure> {
        match self.call(events).await {
            Ok(ack) => Ok(Tally {
                accepted: ack.accepted,
                rejected: ack.rejected,
                duplicates: ack.duplicates,
                settled: events.len() as u64,
            }),
            Err(status) => Err(failure(&status)),
        }
    }

    async fn call(&mut self, events: &[Bytes]) -> Result<Ack, Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unknown(format!("service not ready: {e}")))?;
        let response = match self.mode {
            GrpcMode::Stream => {
                let stream = tokio_stream::iter(events.to_vec());
                self.grpc
                    .client_streaming(
                        self.request(stream),
                        PathAndQuery::from_static(STREAM_PACKETS),
                        RawCodec,
                    )
                    .await
            }
            GrpcMode::Batch => {
                self.grpc
                    .unary(
                        self.request(packet_batch(events)),
                        PathAndQuery::from_static(SEND_BATCH),
                        RawCodec,
                    )
                    .await
            }
        };
        response.map(tonic::Response::into_inner)
    }

    /// A call's request, with the key when there is one.
    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        request
    }
}

/// `PacketBatch { packets (1): repeated Packet }` around encoded packets.
fn packet_batch(events: &[Bytes]) -> Bytes {
    let len: usize = events.iter().map(|e| e.len() + 6).sum();
    let mut batch = BytesMut::with_capacity(len);
    for e in events {
        batch.put_u8((1 << 3) | 2);
        prost::encoding::encode_varint(e.len() as u64, &mut batch);
        batch.put_slice(e);
    }
    batch.freeze()
}

/// A failed call: how far it got (the server's `telemetry-*` metadata), and
/// whether resending the rest may help: the server was unavailable or
/// full, or the call broke off — no connection (refused while a server
/// restarts), or one that was reset or closed mid-call. A status the client
/// made from such a transport error carries that error as its source; one
/// the server sent has none, and is final unless its code says otherwise.
fn failure(status: &Status) -> Failure {
    let message = format!("{}: {}", status.code(), status.message());
    let broke_off = std::error::Error::source(status).is_some();
    match status.code() {
        Code::Unavailable | Code::ResourceExhausted | Code::Unknown => retryable(status, message),
        _ if broke_off => retryable(status, message),
        _ => Failure::Fatal { message },
    }
}

/// A retryable failure, with what the server said it settled.
fn retryable(status: &Status, message: String) -> Failure {
    let md = status.metadata();
    Failure::Retryable {
        settled: Tally {
            accepted: count(md, "telemetry-accepted"),
            rejected: count(md, "telemetry-rejected"),
            duplicates: count(md, "telemetry-duplicates"),
            settled: count(md, "telemetry-settled"),
        },
        message,
    }
}

/// A count in the metadata; 0 when absent or unreadable.
fn count(md: &MetadataMap, key: &str) -> u64 {
    md.get(key)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Sends pre-encoded `Packet` / `PacketBatch` bytes as they are and decodes
/// the `Ack`.
#[derive(Debug, Clone, Copy)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Ack;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Ack;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Ack>, Status> {
        Ack::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("cannot decode the Ack: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telemetry_proto::v1::{Packet, PacketBatch};

    #[test]
    fn encoded_packets_framed_as_a_batch_decode_as_one() {
        let packets: Vec<Packet> = (0..3)
            .map(|i| Packet {
                device_id: format!("d-{i}"),
                payload: vec![7; 200 * i],
                ..Default::default()
            })
            .collect();
        let events: Vec<Bytes> = packets.iter().map(|p| p.encode_to_vec().into()).collect();
        let batch = PacketBatch::decode(packet_batch(&events)).unwrap();
        assert_eq!(batch.packets, packets);
    }

    #[test]
    fn a_full_server_settles_part_of_the_call_and_the_rest_is_resent() {
        let mut status = Status::resource_exhausted("queue full");
        for (k, v) in [
            ("telemetry-accepted", "40"),
            ("telemetry-rejected", "2"),
            ("telemetry-settled", "42"),
        ] {
            status.metadata_mut().insert(k, v.parse().unwrap());
        }
        assert_eq!(
            failure(&status),
            Failure::Retryable {
                settled: Tally {
                    accepted: 40,
                    rejected: 2,
                    duplicates: 0,
                    settled: 42
                },
                message: "Some resource has been exhausted: queue full".into(),
            }
        );
        assert!(matches!(
            failure(&Status::invalid_argument("no")),
            Failure::Fatal { .. }
        ));
    }

    /// A transport error the client wraps into a status of its own.
    #[derive(Debug)]
    struct BrokeOff(Status);

    impl std::fmt::Display for BrokeOff {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "connection closed")
        }
    }

    impl std::error::Error for BrokeOff {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_call_cut_off_by_the_transport_is_retryable_whatever_its_code() {
        // What a connection closed under a call turns into (hyper's
        // "canceled"): CANCELLED, made by the client, with its cause.
        let cut = Status::from_error(Box::new(BrokeOff(Status::cancelled("closed"))));
        assert_eq!(cut.code(), Code::Cancelled);
        assert!(matches!(failure(&cut), Failure::Retryable { .. }));
        // The same code sent by a server is its final answer.
        assert!(matches!(
            failure(&Status::cancelled("by the server")),
            Failure::Fatal { .. }
        ));
    }

    #[tokio::test]
    async fn connection_refused_and_connection_closed_are_retryable() {
        // Nothing listens: refused, as while a server restarts.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // A listener that closes every connection it accepts.
        let closing = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closing_port = closing.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((socket, _)) = closing.accept().await {
                drop(socket);
            }
        });
        for port in [port, closing_port] {
            let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
                .unwrap()
                .connect_lazy();
            let mut client = Client {
                grpc: tonic::client::Grpc::new(channel),
                mode: GrpcMode::Stream,
                authorization: None,
            };
            let err = client.send(&[Bytes::from_static(b"")]).await.unwrap_err();
            assert!(
                matches!(err, Failure::Retryable { ref settled, .. } if *settled == Tally::default()),
                "port {port}: {err:?}"
            );
        }
    }
}
