//! Configs that follow their files: a poller re-reads the certificate, key and CA files every
//! second and swaps in new configs when their bytes changed and still make a valid config.
//!
//! Only new connections see a new config (each handshake takes the current one); established
//! connections keep the session they negotiated. Files that do not make a valid config (half
//! written, a key that does not belong to the certificate, a CA file with no certificate) leave
//! the previous config in place with a warning, so a rotation done as several file writes never
//! serves a broken state: at worst the old certificates stay a second longer.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_rustls::rustls::{ClientConfig, ServerConfig};

use super::{client_config, server_config, Material, TlsError, TlsFiles};

/// How often the files are checked: mtimes are too coarse on some filesystems and Kubernetes
/// swaps Secret volumes through a symlink, so the poller compares content hashes instead.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The configs built from one version of the files.
#[derive(Clone)]
struct Built {
    fingerprint: [u8; 32],
    server: Arc<ServerConfig>,
    /// Only for the peer side, which both listens and dials with the same files.
    client: Option<Arc<ClientConfig>>,
}

/// What one check of the files did.
#[derive(Debug)]
pub enum Reload {
    Unchanged,
    Reloaded,
    /// The files changed but do not make a valid config; the previous one stays.
    Kept(TlsError),
}

/// One side's (client or peer) TLS configs, kept current with the files.
pub struct TlsReloader {
    side: &'static str,
    files: TlsFiles,
    dials: bool,
    current: RwLock<Built>,
    /// The last fingerprint that failed to load: warn once per bad version, not every second.
    last_failed: RwLock<Option<[u8; 32]>>,
}

impl TlsReloader {
    /// Loads the files; fails when they do not make a valid config (start-up refuses then).
    /// `dials` also builds the client config this side dials its peers with.
    pub fn load(side: &'static str, files: TlsFiles, dials: bool) -> Result<Arc<Self>, TlsError> {
        let built = build(&files, dials, &Material::read(&files)?)?;
        Ok(Arc::new(Self {
            side,
            files,
            dials,
            current: RwLock::new(built),
            last_failed: RwLock::new(None),
        }))
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The config the next accepted connection handshakes with.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.read().server
    }

    /// The config the next outgoing connection handshakes with (peer side only).
    pub fn client_config(&self) -> Option<Arc<ClientConfig>> {
        self.read().client
    }

    fn read(&self) -> Built {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads the files and swaps the configs when they changed and are valid.
    pub fn check(&self) -> Reload {
        let material = match Material::read(&self.files) {
            Ok(m) => m,
            // A file missing for a moment (being replaced) is not a reason to drop the config.
            Err(e) => return self.kept(None, e),
        };
        let fingerprint = material.fingerprint();
        if fingerprint == self.read().fingerprint {
            return Reload::Unchanged;
        }
        match build(&self.files, self.dials, &material) {
            Ok(built) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = built;
                *self.last_failed.write().unwrap_or_else(|p| p.into_inner()) = None;
                tracing::info!(
                    side = self.side,
                    "reloaded TLS certificates; new connections use them"
                );
                Reload::Reloaded
            }
            Err(e) => self.kept(Some(fingerprint), e),
        }
    }

    fn kept(&self, fingerprint: Option<[u8; 32]>, e: TlsError) -> Reload {
        let mut last = self.last_failed.write().unwrap_or_else(|p| p.into_inner());
        if fingerprint.is_none() || *last != fingerprint {
            tracing::warn!(side = self.side, error = %e, "TLS files changed but are not usable; keeping the previous certificates");
        }
        *last = fingerprint;
        Reload::Kept(e)
    }

    /// Polls the files until the returned task is aborted.
    pub fn spawn_watch(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // File reads block; they are small, but keep them off the async workers.
                let me2 = me.clone();
                if tokio::task::spawn_blocking(move || me2.check())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        })
    }
}

fn build(files: &TlsFiles, dials: bool, m: &Material) -> Result<Built, TlsError> {
    Ok(Built {
        fingerprint: m.fingerprint(),
        server: Arc::new(server_config(files, m)?),
        client: if dials {
            Some(Arc::new(client_config(files, m, false)?))
        } else {
            None
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use std::path::Path;

    fn ca() -> (String, Issuer<'static, KeyPair>) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        (pem, Issuer::new(params, key))
    }

    /// (certificate PEM, key PEM) for 127.0.0.1.
    fn leaf(issuer: &Issuer<'static, KeyPair>) -> (String, String) {
        let params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn files(dir: &Path) -> TlsFiles {
        TlsFiles {
            cert: Some(dir.join("cert.pem")),
            key: Some(dir.join("key.pem")),
            trusted_ca: Some(dir.join("ca.pem")),
            client_cert_auth: true,
        }
    }

    fn write(dir: &Path, name: &str, contents: &str) {
        std::fs::write(dir.join(name), contents).unwrap();
    }

    /// A reloader over valid files in a fresh directory.
    fn setup() -> (
        tempfile::TempDir,
        Issuer<'static, KeyPair>,
        Arc<TlsReloader>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (ca_pem, issuer) = ca();
        let (cert, key) = leaf(&issuer);
        write(dir.path(), "ca.pem", &ca_pem);
        write(dir.path(), "cert.pem", &cert);
        write(dir.path(), "key.pem", &key);
        let r = TlsReloader::load("test", files(dir.path()), true).unwrap();
        (dir, issuer, r)
    }

    #[test]
    fn unchanged_files_keep_the_same_configs() {
        let (_dir, _issuer, r) = setup();
        let before = r.server_config();
        assert!(matches!(r.check(), Reload::Unchanged));
        assert!(Arc::ptr_eq(&before, &r.server_config()));
    }

    #[test]
    fn a_new_certificate_and_key_replace_the_configs() {
        let (dir, issuer, r) = setup();
        let (server, client) = (r.server_config(), r.client_config().unwrap());
        let (cert, key) = leaf(&issuer);
        write(dir.path(), "cert.pem", &cert);
        write(dir.path(), "key.pem", &key);
        assert!(matches!(r.check(), Reload::Reloaded));
        assert!(!Arc::ptr_eq(&server, &r.server_config()));
        assert!(!Arc::ptr_eq(&client, &r.client_config().unwrap()));
        assert!(matches!(r.check(), Reload::Unchanged));
    }

    #[test]
    fn a_key_that_does_not_match_keeps_the_old_config_until_it_does() {
        let (dir, issuer, r) = setup();
        let before = r.server_config();
        // Half-way through a rotation: the new certificate, the old key.
        let (cert, key) = leaf(&issuer);
        write(dir.path(), "cert.pem", &cert);
        match r.check() {
            Reload::Kept(TlsError::CertKey { .. }) => {}
            other => panic!("expected a kept config over a key mismatch, got {other:?}"),
        }
        assert!(Arc::ptr_eq(&before, &r.server_config()));
        write(dir.path(), "key.pem", &key);
        assert!(matches!(r.check(), Reload::Reloaded));
    }

    #[test]
    fn garbage_half_written_or_missing_files_keep_the_old_config() {
        let (dir, _issuer, r) = setup();
        let before = r.server_config();
        write(dir.path(), "ca.pem", "-----BEGIN CERTIFICATE-----\nMIIB");
        assert!(matches!(r.check(), Reload::Kept(TlsError::BadPem { .. })));
        write(dir.path(), "ca.pem", "not a pem file");
        assert!(matches!(r.check(), Reload::Kept(TlsError::BadPem { .. })));
        std::fs::remove_file(dir.path().join("key.pem")).unwrap();
        assert!(matches!(r.check(), Reload::Kept(TlsError::Read { .. })));
        assert!(Arc::ptr_eq(&before, &r.server_config()));
    }

    #[test]
    fn start_up_refuses_invalid_files() {
        let (dir, issuer, _r) = setup();
        let (_, other_key) = leaf(&issuer);
        write(dir.path(), "key.pem", &other_key);
        assert!(matches!(
            TlsReloader::load("test", files(dir.path()), false),
            Err(TlsError::CertKey { .. })
        ));
        let (cert, key) = leaf(&issuer);
        write(dir.path(), "cert.pem", &cert);
        write(dir.path(), "key.pem", &key);
        let mut no_ca = files(dir.path());
        no_ca.trusted_ca = None;
        assert!(matches!(
            TlsReloader::load("test", no_ca, false),
            Err(TlsError::Missing { .. })
        ));
        assert!(TlsReloader::load("test", files(dir.path()), false).is_ok());
    }
}
