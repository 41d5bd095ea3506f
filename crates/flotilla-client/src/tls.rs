//! Trusting an `https://` coordinator: the public roots (webpki-roots), plus the certificates
//! of [`ClientOptions::ca_cert`] — a private CA, or the coordinator's self-signed certificate
//! (`flotilla --ca-cert FILE`, `FLOTILLA_CA_CERT`).
//!
//! One rustls configuration (ring's provider, as reqwest uses here) serves the HTTP requests and
//! the message WebSocket alike.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::error::ClientError;

/// How a [`crate::Client`] connects, beyond its URL and token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientOptions {
    /// A PEM file of certificates to trust for an `https://` coordinator besides the public
    /// roots: the private CA that signed its certificate, or its self-signed certificate.
    pub ca_cert: Option<PathBuf>,
}

/// The TLS configuration trusting the public roots and the certificates in `ca_cert`.
pub(crate) fn client_config(
    ca_cert: Option<&Path>,
) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_cert {
        let fail = |message: String| ClientError::Tls {
            path: path.display().to_string(),
            message,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .map_err(|e| match e {
                rustls::pki_types::pem::Error::Io(io) => fail(io.to_string()),
                other => fail(format!("not a PEM file of certificates ({other:?})")),
            })?;
        if certs.is_empty() {
            return Err(fail(
                "no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)".into(),
            ));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| fail(format!("a certificate in it cannot be trusted: {e}")))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls {
            path: String::new(),
            message: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
