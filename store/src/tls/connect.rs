//! The dial side: a connector tonic channels use for `https` URLs, taking the current client
//! config for every new connection (so peers dial with reloaded certificates).
//!
//! tonic is given the URL with an `http` scheme and this connector does the TLS itself: tonic's
//! own TLS would fix the config when the channel is made.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{
    verify_tls12_signature, verify_tls13_signature, CryptoProvider,
};
use tokio_rustls::rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tonic::codegen::http::Uri;

use super::TlsReloader;

/// Where a connector takes its config from.
#[derive(Clone)]
enum Source {
    Fixed(Arc<ClientConfig>),
    Reloading(Arc<TlsReloader>),
}

/// A `tower::Service<Uri>` that dials TCP and completes a TLS handshake.
#[derive(Clone)]
pub struct TlsConnector {
    source: Source,
    timeout: Duration,
}

impl TlsConnector {
    pub fn fixed(config: Arc<ClientConfig>, timeout: Duration) -> Self {
        Self {
            source: Source::Fixed(config),
            timeout,
        }
    }

    pub fn reloading(tls: Arc<TlsReloader>, timeout: Duration) -> Self {
        Self {
            source: Source::Reloading(tls),
            timeout,
        }
    }

    fn config(&self) -> std::io::Result<Arc<ClientConfig>> {
        match &self.source {
            Source::Fixed(c) => Ok(c.clone()),
            Source::Reloading(r) => r
                .client_config()
                .ok_or_else(|| std::io::Error::other("this side has no TLS client configuration")),
        }
    }
}

/// The URL tonic is given for a TLS endpoint: same authority, `http` scheme.
pub fn plain_scheme(url: &str) -> String {
    match url.strip_prefix("https://") {
        Some(rest) => format!("http://{rest}"),
        None => url.to_string(),
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = std::io::Result<T>> + Send>>;

impl tower_service::Service<Uri> for TlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = self.config();
        let timeout = self.timeout;
        Box::pin(async move {
            let config = config?;
            let host = uri
                .host()
                .ok_or_else(|| std::io::Error::other(format!("no host in {uri}")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let name = ServerName::try_from(host.clone())
                .map_err(|e| std::io::Error::other(format!("server name {host:?}: {e}")))?;
            // Every failure here happened before any request was sent; the messages say
            // "connect" like hyper's plaintext connector does, which is what callers test to
            // know a call certainly did not reach the peer (server::node's retry rule).
            let tagged = |what: &str, e: std::io::Error| {
                std::io::Error::new(e.kind(), format!("{what} connect error: {e}"))
            };
            let dial = async {
                let tcp = TcpStream::connect((host.as_str(), port))
                    .await
                    .map_err(|e| tagged("tcp", e))?;
                tcp.set_nodelay(true).map_err(|e| tagged("tcp", e))?;
                tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| tagged("tls", e))
            };
            match tokio::time::timeout(timeout, dial).await {
                Ok(r) => r.map(TokioIo::new),
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connect to {host}:{port} timed out after {timeout:?}"),
                )),
            }
        })
    }
}

/// `--insecure-skip-tls-verify`: any server certificate is accepted (the handshake signatures
/// are still checked, so the session is at least with the holder of the presented key).
#[derive(Debug)]
pub struct NoServerVerification(pub Arc<CryptoProvider>);

impl ServerCertVerifier for NoServerVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, tokio_rustls::rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
