//! fedsynth's coordinator: it stores jobs, offers them to the workers of their federation,
//! drives rounds (open, collect, aggregate, commit; stragglers dropped, short rounds retried),
//! and stores the encrypted artifact a designated worker samples. It never touches a row of
//! data and never depends on the training code.
//!
//! - [`config`]: the config file;
//! - [`store`]: jobs, rounds, workers and the audit trail in SQLite or PostgreSQL (sqlx);
//! - [`artifacts`]: weights and encrypted outputs through object_store;
//! - [`secure`]: secure aggregation's stages, decisions and ring sum (pure state);
//! - [`server`]: the gRPC services and the round driver.

pub mod artifacts;
pub mod config;
pub mod error;
pub mod optimizer;
pub mod secure;
pub mod server;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;

use fedsynth_proto::MAX_MESSAGE_BYTES;
use fedsynth_proto::v1::federation_server::FederationServer;
use fedsynth_proto::v1::jobs_server::JobsServer;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

pub use config::CoordinatorConfig;
pub use error::{CoordinatorError, Result};
pub use server::Coordinator;

/// Open connections per peer address.
type PeerCounts =
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>;

/// A peer's place among its open connections, given back when the connection closes.
struct PeerSlot {
    peer: std::net::IpAddr,
    counts: PeerCounts,
}

impl PeerSlot {
    /// A slot for `peer`, if it has fewer than `max` connections open.
    fn take(counts: &PeerCounts, peer: std::net::IpAddr, max: usize) -> Option<Self> {
        let mut open = counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = open.entry(peer).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Self {
            peer,
            counts: counts.clone(),
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

/// An accepted connection holding one of the server's connection permits and one of its
/// peer's slots until it closes.
struct Limited {
    inner: tokio::net::TcpStream,
    _permit: tokio::sync::OwnedSemaphorePermit,
    _slot: PeerSlot,
}

impl Connected for Limited {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}

impl tokio::io::AsyncRead for Limited {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Limited {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accepted connections, at most `max` open at once (the next is accepted only when a
/// permit is free) and at most `per_peer` from one IP address (a further one from it is
/// closed as soon as it is accepted, without taking a permit).
fn limited_incoming(
    listener: tokio::net::TcpListener,
    max: usize,
    per_peer: usize,
) -> impl tokio_stream::Stream<Item = std::io::Result<Limited>> + Send + 'static {
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(max));
    let counts = PeerCounts::default();
    futures_util::stream::unfold(
        (listener, permits, counts),
        move |(listener, permits, counts)| async move {
            let permit = permits.clone().acquire_owned().await.ok()?;
            let accepted = loop {
                match listener.accept().await {
                    Ok((inner, addr)) => match PeerSlot::take(&counts, addr.ip(), per_peer) {
                        Some(slot) => {
                            break Ok(Limited {
                                inner,
                                _permit: permit,
                                _slot: slot,
                            });
                        }
                        None => drop(inner),
                    },
                    Err(e) => break Err(e),
                }
            };
            Some((accepted, (listener, permits, counts)))
        },
    )
}

fn read(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| CoordinatorError::Config(format!("{}: {e}", path.display())))
}

/// Binds the listening socket, then serves until `shutdown` resolves. `on_listen` receives
/// the bound address (port 0 in the config picks a free port).
pub async fn serve(
    config: CoordinatorConfig,
    on_listen: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    // Small HTTP/2 windows: an upload stream then holds about a chunk in flight, so the
    // coordinator's memory grows by little more than a chunk per concurrent upload.
    // Limits against a peer that opens connections and streams and never finishes them: a
    // request may take at most 15 minutes (a large model's upload on a slow link), a
    // connection carries at most 32 concurrent streams, and dead connections are found by
    // keepalives.
    let mut server = Server::builder()
        .initial_stream_window_size(Some((2 * fedsynth_proto::CHUNK_BYTES) as u32))
        .initial_connection_window_size(Some((8 * fedsynth_proto::CHUNK_BYTES) as u32))
        .timeout(std::time::Duration::from_secs(15 * 60))
        .max_concurrent_streams(Some(32))
        .concurrency_limit_per_connection(32)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
        .tcp_keepalive(Some(std::time::Duration::from_secs(60)));
    if let Some(tls) = &config.tls {
        let identity = Identity::from_pem(read(&tls.cert)?, read(&tls.key)?);
        let tls_config = ServerTlsConfig::new()
            .identity(identity)
            .client_ca_root(Certificate::from_pem(read(&tls.client_ca)?))
            // Every peer shows a certificate the federation's CA signed: workers (whose
            // names the Federation service checks on every call) and the job owner (whose
            // token the Jobs service checks). A peer without one never reaches a handler.
            .client_auth_optional(false);
        server = server
            .tls_config(tls_config)
            .map_err(|e| CoordinatorError::Transport(e.to_string()))?;
    }
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| {
            CoordinatorError::Transport(format!("cannot listen on {}: {e}", config.listen))
        })?;
    let addr = listener.local_addr()?;
    let (max_connections, per_peer) = (config.max_connections, config.max_connections_per_peer);
    let coordinator = Coordinator::open(config).await?;
    tokio::spawn(coordinator.clone().drive());
    let jobs = JobsServer::new(server::JobsService(coordinator.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let federation = FederationServer::new(server::FederationService(coordinator))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    on_listen(addr);
    server
        .add_service(jobs)
        .add_service(federation)
        .serve_with_incoming_shutdown(
            limited_incoming(listener, max_connections, per_peer),
            shutdown,
        )
        .await
        .map_err(|e| CoordinatorError::Transport(e.to_string()))
}
