//! A TCP proxy between telemetry-ingest and redis-server, for faults of the
//! network between them.
//!
//! Every connection ingest opens to the proxy gets its own connection to
//! Redis, and bytes are copied both ways. Two faults can be switched on
//! while traffic flows:
//!
//! - [`Proxy::arm`]: the next reply that comes back on a connection that
//!   sent a flush script (EVAL/EVALSHA) after arming is swallowed and that
//!   connection is cut — Redis ran the script, ingest never hears so, as
//!   when a network drop loses a reply. One reply per arming.
//! - [`Proxy::set_latency`]: every chunk of replies is held for that long
//!   before it reaches ingest (added latency, not a throughput cap: replies
//!   read meanwhile are queued behind it with their own due times).
//! - [`Proxy::cut`]: Redis becomes unreachable — open connections are closed
//!   and new ones are closed as soon as they are accepted — until
//!   [`Proxy::restore`]. Redis itself keeps running and keeps its data.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// The proxy; it runs until the test's runtime ends.
pub struct Proxy {
    pub port: u16,
    faults: Arc<Faults>,
    /// Set once an armed proxy has swallowed a reply.
    pub swallowed: Arc<AtomicBool>,
}

/// What the connections share.
#[derive(Default)]
struct Faults {
    /// Swallow the next reply to a flush script.
    armed: AtomicBool,
    /// Replies swallowed so far.
    dropped: AtomicU64,
    /// Added latency of every reply, in microseconds.
    latency_us: AtomicU64,
    /// True while Redis is unreachable.
    cut: tokio::sync::watch::Sender<bool>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `127.0.0.1:upstream`.
    pub async fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let faults = Arc::new(Faults::default());
        let swallowed = Arc::new(AtomicBool::new(false));
        let (f, s) = (faults.clone(), swallowed.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *f.cut.borrow() {
                    drop(client);
                    continue;
                }
                let (f, s) = (f.clone(), s.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    pipe(client, server, f, s).await;
                });
            }
        });
        Proxy {
            port,
            faults,
            swallowed,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Swallows the reply to the next flush script and cuts its connection.
    pub fn arm(&self) {
        self.swallowed.store(false, Ordering::SeqCst);
        self.faults.armed.store(true, Ordering::SeqCst);
    }

    /// Whether an arming is still waiting for a flush.
    pub fn is_armed(&self) -> bool {
        self.faults.armed.load(Ordering::SeqCst)
    }

    /// Replies swallowed so far.
    pub fn dropped(&self) -> u64 {
        self.faults.dropped.load(Ordering::SeqCst)
    }

    /// Makes Redis unreachable: every connection is closed, new ones too.
    pub fn cut(&self) {
        self.faults.cut.send_replace(true);
    }

    /// Makes Redis reachable again.
    pub fn restore(&self) {
        self.faults.cut.send_replace(false);
    }

    /// Holds every reply for `latency` before it reaches ingest.
    pub fn set_latency(&self, latency: Duration) {
        self.faults
            .latency_us
            .store(latency.as_micros() as u64, Ordering::SeqCst);
    }
}

async fn pipe(
    client: TcpStream,
    server: TcpStream,
    faults: Arc<Faults>,
    swallowed: Arc<AtomicBool>,
) {
    let mut cut = faults.cut.subscribe();
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    // Set when this connection sent a flush script while the proxy was armed.
    let saw_eval = Arc::new(AtomicBool::new(false));
    let seen = saw_eval.clone();
    let up_faults = faults.clone();
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if up_faults.armed.load(Ordering::SeqCst) && contains(&buf[..n], b"EVAL") {
                seen.store(true, Ordering::SeqCst);
            }
            if sw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    // Replies are read as they come and written when due.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read_replies = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if saw_eval.load(Ordering::SeqCst) && faults.armed.swap(false, Ordering::SeqCst) {
                // Redis has run the script; its reply is lost with the
                // connection.
                faults.dropped.fetch_add(1, Ordering::SeqCst);
                swallowed.store(true, Ordering::SeqCst);
                return;
            }
            let latency = Duration::from_micros(faults.latency_us.load(Ordering::SeqCst));
            if tx
                .send((Instant::now() + latency, buf[..n].to_vec()))
                .is_err()
            {
                return;
            }
        }
    };
    let write_replies = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if cw.write_all(&bytes).await.is_err() {
                return;
            }
        }
    };
    // A swallowed reply ends `read_replies`, which ends the connection at
    // once (what was queued before it is dropped too: nothing of it was
    // due yet).
    let down = async move {
        tokio::select! { _ = read_replies => {}, _ = write_replies => {} }
    };
    tokio::select! {
        _ = up => {},
        _ = down => {},
        _ = cut.wait_for(|cut| *cut) => {},
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
