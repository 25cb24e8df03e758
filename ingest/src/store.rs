//! Redis: the connections, the health probe, and the atomic flush.
//!
//! Writes and reads use separate multiplexed connections, so a burst of
//! flushes does not queue the query API behind it. Both reconnect on their
//! own (redis-rs `ConnectionManager`); a command that hit a dropped
//! connection fails without telling whether it ran, which is why every flush
//! is idempotent: the Lua script in `store/flush.lua` checks a per-flush
//! marker before it writes anything, and a retry reuses the same marker.
//!
//! This file does the I/O; what it sends and reads is decided by pure code:
//! - [`script`]: the flush's `EVALSHA` arguments (the layout of
//!   `flush.lua`'s header) and the parser of its reply;
//! - [`refresh`]: when a recent-events list has its TTL set again;
//! - [`tls`]: the certificates a `rediss://` connection trusts.

pub mod refresh;
pub mod script;
pub mod tls;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::TcpSettings;
use redis::{ErrorKind, IntoConnectionInfo, Script, ServerErrorKind};

use crate::Result;
use crate::aggregate::Plan;
use crate::config::RedisArgs;
use crate::keys::Keys;

use refresh::RefreshLog;
pub use script::Applied;
use script::ScriptReply;

const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The pipeline's Redis.
#[derive(Clone)]
pub struct Store {
    writer: ConnectionManager,
    reader: ConnectionManager,
    keys: Keys,
    script: Script,
    /// When this pod last set each recent-events list's TTL.
    refreshed: Arc<Mutex<RefreshLog>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("prefix", &self.keys.prefix())
            .finish()
    }
}

impl Store {
    /// Prepares the connections; they are made lazily, so the server starts
    /// (not ready) while Redis is still down.
    pub fn open(args: &RedisArgs, keys: Keys) -> Result<Store> {
        // TCP_NODELAY, as Redis sets on its side (redis-rs does not by
        // default): a flush is one large command, and Nagle's algorithm may
        // hold its last segment until the ones before it are acknowledged.
        let mut info = args
            .redis_url
            .as_str()
            .into_connection_info()?
            .set_tcp_settings(TcpSettings::default().set_nodelay(true));
        let mut settings = info.redis_settings().clone();
        if let Some(password) = &args.redis_password {
            settings = settings.set_password(password);
        }
        if let Some(username) = &args.redis_username {
            settings = settings.set_username(username);
        }
        info = info.set_redis_settings(settings);
        // rustls (for `rediss://`) uses the process-wide crypto provider; ring
        // is the one the workspace builds, set here so that a second provider
        // brought in by another crate cannot make that choice ambiguous.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = match tls::roots(&info, args.redis_ca_file.as_deref())? {
            Some(root_cert) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            )?,
            None => redis::Client::open(info)?,
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        Ok(Store {
            writer: ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?,
            reader: ConnectionManager::new_lazy_with_config(client, config)?,
            keys,
            script: Script::new(script::SOURCE),
            refreshed: Default::default(),
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// A connection for queries.
    pub fn reader(&self) -> ConnectionManager {
        self.reader.clone()
    }

    /// `PING` on the write connection.
    pub async fn ping(&self) -> Result<()> {
        let mut conn = self.writer.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    /// Applies a flush once; returns the claims of the plan (as numbered in
    /// [`crate::aggregate::Slot::Claimed`]) that were duplicates, and how
    /// long the script ran. Replaying the same `batch_id` returns the first
    /// result (without a run time) and writes nothing.
    ///
    /// The script refuses (writing nothing) a flush in which some ids are
    /// already claimed and names them; the flush is then sent again without
    /// those events. Each round trip is atomic on its own, so a pod dying
    /// between them loses nothing.
    pub async fn apply(&self, batch_id: &str, plan: &Plan) -> Result<Applied> {
        let marker = self.keys.batch(batch_id);
        let mut duplicates: HashSet<u32> = plan.repeated_claims().iter().copied().collect();
        loop {
            let writes = plan.writes(&duplicates);
            let now = Instant::now();
            let refresh = self
                .refreshed
                .lock()
                .expect("not poisoned")
                .due(&writes.lists, now);
            let cmd = script::command(
                self.script.get_hash(),
                &marker,
                &writes,
                &refresh,
                &duplicates,
            );
            let reply = self.eval(&cmd).await?;
            match script::parse_reply(&reply, &writes)? {
                ScriptReply::Applied(applied) => {
                    self.refreshed.lock().expect("not poisoned").record(
                        &writes.lists,
                        &refresh,
                        now,
                    );
                    return Ok(applied);
                }
                ScriptReply::Claimed(claims) => duplicates.extend(claims),
            }
        }
    }

    /// `EVALSHA`, loading the script first when Redis does not know it.
    async fn eval(&self, cmd: &redis::Cmd) -> Result<String> {
        let mut conn = self.writer.clone();
        match cmd.query_async(&mut conn).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.script.load_async(&mut conn).await?;
                Ok(cmd.query_async(&mut conn).await?)
            }
            other => Ok(other?),
        }
    }
}
