//! Certificates made at test time (rcgen) and the directory of PEM files members and clients
//! read, rewritten in place the way Kubernetes updates a mounted Secret.

use std::path::{Path, PathBuf};

use cairn_store::client::ClientTls;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};

pub struct Ca {
    pub pem: String,
    pub issuer: Issuer<'static, KeyPair>,
}

pub fn new_ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("ca key");
    let cert = params.self_signed(&key).expect("self-sign ca");
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A leaf usable as server and client certificate (etcd's peer certificates are both), valid
/// for 127.0.0.1 and localhost.
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

pub fn leaf(ca: &Ca, common_name: &str, serial: u64) -> Leaf {
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("leaf params");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.serial_number = Some(SerialNumber::from(serial));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().expect("leaf key");
    let cert = params.signed_by(&key, &ca.issuer).expect("sign leaf");
    Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

/// Replaces a file the way Kubernetes updates a mounted Secret: write aside, rename over.
pub fn write_atomic(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).expect("write pem");
    std::fs::rename(&tmp, path).expect("rename pem");
}

/// The files every member and the test's clients read: one directory, rewritten in place.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        Pki {
            dir: tempfile::tempdir().expect("pki dir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn set_ca(&self, cas: &[&Ca]) {
        let bundle: String = cas.iter().map(|c| c.pem.clone()).collect();
        write_atomic(&self.path("ca.pem"), &bundle);
    }

    /// Writes `role.pem` and `role-key.pem` (role: server, peer, client, or a probe's name).
    pub fn set_leaf(&self, role: &str, l: &Leaf) {
        write_atomic(&self.path(&format!("{role}.pem")), &l.cert_pem);
        write_atomic(&self.path(&format!("{role}-key.pem")), &l.key_pem);
    }

    pub fn flag(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// `serve` flags: TLS and certificate authentication on client and peer URLs.
    pub fn serve_flags(&self) -> Vec<String> {
        vec![
            "--cert-file".into(),
            self.flag("server.pem"),
            "--key-file".into(),
            self.flag("server-key.pem"),
            "--trusted-ca-file".into(),
            self.flag("ca.pem"),
            "--client-cert-auth".into(),
            "--peer-cert-file".into(),
            self.flag("peer.pem"),
            "--peer-key-file".into(),
            self.flag("peer-key.pem"),
            "--peer-trusted-ca-file".into(),
            self.flag("ca.pem"),
            "--peer-client-cert-auth".into(),
        ]
    }

    pub fn client_tls(&self) -> ClientTls {
        ClientTls {
            ca_file: Some(self.path("ca.pem")),
            cert_file: Some(self.path("client.pem")),
            key_file: Some(self.path("client-key.pem")),
            insecure_skip_verify: false,
        }
    }

    /// etcdctl's (and cairn's) global TLS flags for the client identity.
    pub fn ctl_flags(&self) -> Vec<String> {
        vec![
            "--cacert".into(),
            self.flag("ca.pem"),
            "--cert".into(),
            self.flag("client.pem"),
            "--key".into(),
            self.flag("client-key.pem"),
        ]
    }
}

/// A fresh PKI: CA `ca`, and server, peer and client ("root") leaves signed by it.
pub fn pki_with(ca: &Ca) -> Pki {
    let pki = Pki::new();
    pki.set_ca(&[ca]);
    pki.set_leaf("server", &leaf(ca, "server", 100));
    pki.set_leaf("peer", &leaf(ca, "peer", 101));
    pki.set_leaf("client", &leaf(ca, "root", 102));
    pki
}
