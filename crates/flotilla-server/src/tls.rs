//! HTTPS: the coordinator's certificate and key (PEM) and a listener that completes TLS
//! handshakes for `axum::serve`.
//!
//! [`TlsListener`] implements axum's `Listener`, so plain and TLS serving share one path —
//! `axum::serve` with `into_make_service_with_connect_info::<SocketAddr>()` and the same
//! graceful shutdown — and handlers see the peer address as `ConnectInfo<SocketAddr>` either
//! way. Accepting runs in its own task: each connection's handshake runs in a task of its own
//! (at most [`MAX_HANDSHAKES`] at once, each given [`HANDSHAKE_TIMEOUT`]), so a slow or silent
//! client delays nobody, and only finished handshakes reach the server.
//!
//! A client that speaks plain HTTP to the TLS port (its first byte is not a TLS handshake
//! record, 0x16) gets a plain `400` whose JSON error body (`tls_required`) says to use
//! `https://`, then the connection is closed: `flotilla` and curl print that rather than a
//! reset connection.
//!
//! rustls with the `ring` provider (the one reqwest already brings into this workspace), TLS
//! 1.2 and 1.3, HTTP/1.1 offered by ALPN (the server speaks HTTP/1.1).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Handshakes under way at once; past it, accepted connections wait for a slot.
pub const MAX_HANDSHAKES: usize = 256;

/// How long a client may take to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The certificate chain and private key of `flotilla serve --tls-cert FILE --tls-key FILE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: the server's certificate first, then any intermediates.
    pub cert: PathBuf,
    /// PEM: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Reads the certificate and key and builds the server's TLS configuration; the error is one
/// line naming the file and what to fix.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs = read_certs(&files.cert).map_err(|e| format!("--tls-cert {e}"))?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        format!(
            "--tls-key {}: {} (expected a PEM private key: -----BEGIN PRIVATE KEY-----)",
            files.key.display(),
            pem_error(e)
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "--tls-cert {} and --tls-key {} do not go together: {e}",
                files.cert.display(),
                files.key.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Every certificate of a PEM file (at least one).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {}", path.display(), pem_error(e)))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        rustls::pki_types::pem::Error::NoItemsFound => "no such item in it".to_owned(),
        other => format!("not valid PEM ({other:?})"),
    }
}

/// Accepts TCP connections and hands over those whose TLS handshake completed; see the module
/// documentation.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Serves TLS with `config` on `tcp`.
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(MAX_HANDSHAKES);
        let accepting = tokio::spawn(accept_loop(tcp, TlsAcceptor::from(config), tx, local));
        Ok(TlsListener {
            ready,
            local,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        // The server stopped accepting (shutdown): so does the TCP listener.
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accepting task ended (it only does when aborted): accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
) {
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = tokio::select! {
            _ = ready.closed() => return,
            accepted = tcp.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors and the like: wait rather than spin (as axum does).
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = stream.set_nodelay(true);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(stream, &acceptor, local)).await
            {
                Ok(Ok(Some(tls))) => {
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Ok(None)) => {
                    tracing::debug!(%peer, "plain HTTP on the TLS port: told to use https");
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// The TLS stream, or `None` when the client spoke plain HTTP and was answered so.
async fn handshake(
    stream: TcpStream,
    acceptor: &TlsAcceptor,
    local: SocketAddr,
) -> std::io::Result<Option<TlsStream<TcpStream>>> {
    let mut first = [0u8; 1];
    let n = stream.peek(&mut first).await?;
    if n == 1 && first[0].is_ascii_uppercase() {
        answer_plain_http(stream, local).await?;
        return Ok(None);
    }
    acceptor.accept(stream).await.map(Some)
}

/// A plain HTTP `400` saying to use https, then the end of the connection. The request's head
/// is read first (and what follows drained for a moment after), so that closing does not reset
/// the connection before the client has read the answer.
async fn answer_plain_http(mut stream: TcpStream, local: SocketAddr) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let host = String::from_utf8_lossy(&head)
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("host")
                .then(|| value.trim().to_owned())
        })
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or_else(|| local.to_string());
    let body = format!(
        r#"{{"error":{{"code":"tls_required","message":"this coordinator speaks HTTPS only: use https://{host} (with --ca-cert FILE if its certificate is not publicly trusted)"}}}}"#
    );
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(answer.as_bytes()).await?;
    stream.shutdown().await?;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::extract::ConnectInfo;
    use axum::routing::get;
    use axum::serve::ListenerExt;

    use super::*;

    /// Handlers see the peer's address over TLS as over plain TCP (`start` serves both ways).
    #[tokio::test]
    async fn handlers_see_the_peer_address_over_tls_and_plain_tcp() {
        let dir = tempfile::tempdir().unwrap();
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let files = TlsFiles {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
        };
        std::fs::write(&files.cert, certified.cert.pem()).unwrap();
        std::fs::write(&files.key, certified.signing_key.serialize_pem()).unwrap();
        let app = axum::Router::new().route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        );

        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tls_addr = tcp.local_addr().unwrap();
        let listener = TlsListener::new(tcp, server_config(&files).unwrap())
            .unwrap()
            .tap_io(|_| {});
        let service = app
            .clone()
            .into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, service).await });
        let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plain_addr = plain.local_addr().unwrap();
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(plain, service).await });

        let trusting = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap(),
            )
            .build()
            .unwrap();
        for url in [
            format!("https://{tls_addr}/peer"),
            format!("http://{plain_addr}/peer"),
        ] {
            let peer = trusting
                .get(&url)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let peer: SocketAddr = peer.parse().unwrap_or_else(|_| panic!("{url}: {peer}"));
            assert!(peer.ip().is_loopback() && peer.port() != 0, "{url}: {peer}");
        }
    }
}
