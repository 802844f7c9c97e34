//! What the streaming server's fallible calls return.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use rustls_pki_types::pem;
use tokio_rustls::rustls;

use crate::config::InvalidConfig;

/// A failed [`StreamServer::bind`](crate::StreamServer::bind) or
/// [`StreamServer::url`](crate::StreamServer::url), by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// `url`: as many requests as the server keeps are waiting for their clients.
    /// Transient: room comes back as they connect or expire.
    #[error("too many streaming requests waiting ({max}); try again later")]
    TooManyPending {
        /// The most requests that may wait at once.
        max: usize,
    },
    /// `url`: the system's random source failed, so no token could be made.
    #[error("generating a streaming token")]
    Random(#[source] getrandom::Error),
    /// `bind`: a `[streaming]` value is unusable.
    #[error(transparent)]
    Config(#[from] InvalidConfig),
    /// `bind`: the listen address cannot be bound (in use, not local, no permission).
    #[error("binding the streaming server to {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// `bind`: the bound socket's address could not be read.
    #[error("reading the streaming server's address")]
    LocalAddr(#[source] io::Error),
    /// `bind`: the certificate file cannot be read or is not PEM.
    #[error("streaming.tls_cert_file {}", path.display())]
    TlsCert {
        /// The certificate file.
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    /// `bind`: the certificate file holds no certificate.
    #[error("streaming.tls_cert_file {}: no certificate in it", path.display())]
    NoCertificate {
        /// The certificate file.
        path: PathBuf,
    },
    /// `bind`: the key file cannot be read or holds no private key.
    #[error("streaming.tls_key_file {}", path.display())]
    TlsKey {
        /// The key file.
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    /// `bind`: rustls refused the certificate and key (most often: they are not a pair).
    #[error("streaming TLS: {what}")]
    Tls {
        /// The step that failed.
        what: &'static str,
        #[source]
        source: rustls::Error,
    },
}
