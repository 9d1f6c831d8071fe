//! TLS for the client and peer listeners and for everything that dials them (peers, the CLI,
//! the operator): PEM files -> rustls configs (this file), configs that follow the files as
//! they change (`reload.rs`), the accept stream the gRPC servers take (`accept.rs`) and the
//! connector tonic channels dial with (`connect.rs`).
//!
//! rustls with the ring provider: TLS 1.2 and 1.3 only, no OpenSSL. The provider is always
//! passed explicitly, so it does not matter which providers other crates enable.

pub mod accept;
pub mod connect;
pub mod reload;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};

pub use reload::TlsReloader;

/// ALPN protocols the client listener offers: gRPC needs h2, `/health` and `/metrics` clients
/// may speak HTTP/1.1.
const SERVER_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {what}", path.display())]
    BadPem { path: PathBuf, what: String },
    #[error("{what} is needed but was not given")]
    Missing { what: &'static str },
    #[error("certificate {} and key {}: {source}", cert.display(), key.display())]
    CertKey {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("client certificate verification with {}: {reason}", ca.display())]
    Verifier { ca: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("loading the system's trusted CA certificates: {0}")]
    NativeRoots(String),
}

/// The files one side (client or peer) is configured with: etcd's `TLSInfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub trusted_ca: Option<PathBuf>,
    /// Require and verify client certificates against `trusted_ca` on the listener.
    pub client_cert_auth: bool,
}

impl TlsFiles {
    /// Whether a certificate and key are configured (etcd's `TLSInfo.Empty()` negated).
    pub fn has_identity(&self) -> bool {
        self.cert.is_some() && self.key.is_some()
    }
}

/// The files' bytes, read once: configs are built from them and reloads compare their hash,
/// so a config never mixes a file read before a change with one read after it.
#[derive(Debug, Clone, Default)]
pub struct Material {
    pub cert: Option<Vec<u8>>,
    pub key: Option<Vec<u8>>,
    pub trusted_ca: Option<Vec<u8>>,
}

impl Material {
    pub fn read(files: &TlsFiles) -> Result<Self, TlsError> {
        let read = |p: &Option<PathBuf>| -> Result<Option<Vec<u8>>, TlsError> {
            p.as_ref()
                .map(|path| {
                    std::fs::read(path).map_err(|source| TlsError::Read {
                        path: path.clone(),
                        source,
                    })
                })
                .transpose()
        };
        Ok(Self {
            cert: read(&files.cert)?,
            key: read(&files.key)?,
            trusted_ca: read(&files.trusted_ca)?,
        })
    }

    /// A hash of every file's bytes: equal fingerprints mean nothing to reload.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [&self.cert, &self.key, &self.trusted_ca] {
            match part {
                Some(bytes) => {
                    h.update((bytes.len() as u64).to_be_bytes());
                    h.update(bytes);
                }
                None => h.update(u64::MAX.to_be_bytes()),
            }
        }
        h.finalize().into()
    }
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file (a leaf and its chain, or a CA bundle).
pub fn parse_certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            path: path.to_path_buf(),
            what: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::BadPem {
            path: path.to_path_buf(),
            what: "no certificate found".into(),
        });
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn parse_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::BadPem {
        path: path.to_path_buf(),
        what: format!("no usable private key: {e}"),
    })
}

/// A root store from a CA bundle (several CAs during a rollover).
pub fn roots(path: &Path, pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in parse_certs(path, pem)? {
        store.add(cert).map_err(|e| TlsError::BadPem {
            path: path.to_path_buf(),
            what: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(store)
}

fn native_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(TlsError::NativeRoots(format!("{:?}", found.errors)));
    }
    Ok(store)
}

/// The certificate and key, both present and parsed.
fn identity(
    files: &TlsFiles,
    m: &Material,
) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, TlsError> {
    match (&files.cert, &m.cert, &files.key, &m.key) {
        (Some(cp), Some(c), Some(kp), Some(k)) => {
            Ok(Some((parse_certs(cp, c)?, parse_key(kp, k)?)))
        }
        _ => Ok(None),
    }
}

fn cert_key_error(files: &TlsFiles, source: rustls::Error) -> TlsError {
    TlsError::CertKey {
        cert: files.cert.clone().unwrap_or_default(),
        key: files.key.clone().unwrap_or_default(),
        source,
    }
}

/// The listener's config: this side's certificate, and with `client_cert_auth` a required client
/// certificate chaining to the trusted CA bundle.
pub fn server_config(files: &TlsFiles, m: &Material) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let (certs, key) = identity(files, m)?.ok_or(TlsError::Missing {
        what: "a certificate and key (--cert-file/--key-file)",
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)?;
    let builder = if files.client_cert_auth {
        let (Some(ca_path), Some(ca)) = (&files.trusted_ca, &m.trusted_ca) else {
            return Err(TlsError::Missing {
                what: "a trusted CA file for client certificate authentication",
            });
        };
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots(ca_path, ca)?),
            provider,
        )
        .build()
        .map_err(|e| TlsError::Verifier {
            ca: ca_path.clone(),
            reason: e.to_string(),
        })?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| cert_key_error(files, e))?;
    config.alpn_protocols = SERVER_ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A dialer's config: servers verified against the trusted CA bundle (the system's roots when
/// none is given, nothing with `skip_verify`), this side's certificate presented when it has one.
pub fn client_config(
    files: &TlsFiles,
    m: &Material,
    skip_verify: bool,
) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)?;
    let builder = if skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(connect::NoServerVerification(provider)))
    } else {
        let store = match (&files.trusted_ca, &m.trusted_ca) {
            (Some(path), Some(ca)) => roots(path, ca)?,
            _ => native_roots()?,
        };
        builder.with_root_certificates(store)
    };
    let mut config = match identity(files, m)? {
        Some((certs, key)) => builder
            .with_client_auth_cert(certs, key)
            .map_err(|e| cert_key_error(files, e))?,
        None => builder.with_no_client_auth(),
    };
    // gRPC is HTTP/2 only; Go servers (and etcd) insist on the ALPN.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}
