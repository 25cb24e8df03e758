//! Accepted connections, on both listeners: at most `--max-connections` at
//! once ([`Gate`]; beyond that, new connections wait in the kernel's listen
//! backlog until one closes, and are refused by the kernel once the backlog
//! is full), each closed once nothing has been read from it or written to
//! it for `--idle-timeout-seconds` ([`Guarded`]). [`serve_http`] is the HTTP
//! accept loop, which adds hyper's header read timeout. TLS, when on, runs
//! on a [`Guarded`] connection, inside these limits ([`crate::tls`]).
//!
//! The idle timeout only cuts connections that carry no traffic at all: a
//! gRPC stream that stops sending is ended earlier, with a status and the
//! trailers that say what was settled (`--grpc-stream-idle-timeout-seconds`,
//! [`crate::grpc`]), and a server-side wait (backpressure, a flush) is far
//! shorter than the default.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

/// A listener that holds at most `max` connections open at once.
#[derive(Debug)]
pub struct Gate {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    idle: Duration,
}

impl Gate {
    pub fn new(listener: TcpListener, max: usize, idle: Duration) -> Gate {
        Gate {
            listener,
            permits: Arc::new(Semaphore::new(max.max(1))),
            idle,
        }
    }

    /// The next connection, once fewer than `max` are open. Accept errors
    /// (out of file descriptors, a connection reset before it was accepted)
    /// are logged and the accept retried, as they concern one connection.
    pub async fn accept(&self) -> (Guarded, SocketAddr) {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        loop {
            match self.listener.accept().await {
                Ok((tcp, addr)) => {
                    // Acks are small writes the client waits on: Nagle would
                    // hold them.
                    let _ = tcp.set_nodelay(true);
                    return (Guarded::new(tcp, permit, self.idle), addr);
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// The accepted connections as a stream (what tonic serves).
    pub fn incoming(self) -> impl futures::Stream<Item = io::Result<Guarded>> + Send + 'static {
        futures::stream::unfold(self, |gate| async move {
            let (io, _) = gate.accept().await;
            Some((Ok(io), gate))
        })
    }
}

/// An accepted connection: holds its place under the connection limit and
/// fails reads with `TimedOut` once it has been idle for the timeout.
#[derive(Debug)]
pub struct Guarded {
    tcp: TcpStream,
    idle: Duration,
    last_activity: Instant,
    timer: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl Guarded {
    fn new(tcp: TcpStream, permit: OwnedSemaphorePermit, idle: Duration) -> Guarded {
        let now = Instant::now();
        Guarded {
            tcp,
            idle,
            last_activity: now,
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
            _permit: permit,
        }
    }

    /// A write's result, noted as activity when it wrote anything.
    fn wrote(&mut self, written: io::Result<usize>) -> io::Result<usize> {
        if matches!(written, Ok(n) if n > 0) {
            self.last_activity = Instant::now();
        }
        written
    }

    /// Ready with an error once the connection has been idle for the timeout.
    /// The timer is moved forward lazily, only when it fires early.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            let deadline = self.last_activity + self.idle;
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            ready!(self.timer.as_mut().poll(cx));
            if self.last_activity + self.idle <= Instant::now() {
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "connection idle for {:?} (--idle-timeout-seconds)",
                        self.idle
                    ),
                ));
            }
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.tcp).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.last_activity = Instant::now();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = ready!(Pin::new(&mut this.tcp).poll_write(cx, buf));
        Poll::Ready(this.wrote(written))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = ready!(Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs));
        Poll::Ready(this.wrote(written))
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Guarded {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.tcp.connect_info()
    }
}

/// Serves `app` on the connections of `gate` until `stop`, then lets the
/// open connections finish their requests (graceful shutdown). A request
/// head (request line and headers) must arrive in full within
/// `header_read_timeout`; hyper starts that clock whenever it waits for a
/// request, so it also closes an HTTP/1 keep-alive connection that sends no
/// next request in that time. With `tls`, each connection first completes
/// its TLS handshake (in its own task, within the handshake timeout).
pub async fn serve_http(
    gate: Gate,
    app: Router,
    header_read_timeout: Duration,
    tls: Option<crate::tls::Tls>,
    stop: CancellationToken,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    loop {
        let (io, _) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = gate.accept() => accepted,
        };
        let service = TowerToHyperService::new(app.clone());
        // Watched from here, so the shutdown waits for a handshake too.
        let watcher = graceful.watcher();
        let (builder, tls) = (builder.clone(), tls.clone());
        tokio::spawn(async move {
            let served = match tls {
                None => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
                    watcher.watch(conn.into_owned()).await
                }
                Some(tls) => {
                    let Ok(io) = tls.accept(io).await else {
                        return;
                    };
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
                    watcher.watch(conn.into_owned()).await
                }
            };
            if let Err(error) = served {
                tracing::debug!(error = %error, "http connection ended with an error");
            }
        });
    }
    // Stop listening, then wait for the open connections to finish.
    drop(gate);
    graceful.shutdown().await;
}
