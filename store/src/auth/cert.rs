//! The user a client certificate names (etcd's `--client-cert-auth`): with no token on the
//! request, etcd takes the user name from the common name (CN) of the verified certificate.

use x509_parser::prelude::{FromDer, X509Certificate};

/// The first common name in the subject of a DER certificate; `None` when it cannot be parsed
/// or has no CN. Verifying the certificate is the TLS layer's job, done before this is asked.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    /// `openssl req -x509 -subj "/O=cairn test/CN=alice"` (EC P-256), in DER.
    const ALICE: &str = "MIIBojCCAUegAwIBAgIUJOdyekr6qAZoY7yqHizsuYu4zI0wCgYIKoZIzj0EAwIwJTETMBEGA1UECgwKY2Fpcm4gdGVzdDEOMAwGA1UEAwwFYWxpY2UwIBcNMjYxMTI0MTc0OTEzWhgPMjEyNjEwMzExNzQ5MTNaMCUxEzARBgNVBAoMCmNhaXJuIHRlc3QxDjAMBgNVBAMMBWFsaWNlMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEfUjmaMDCotjfn34CftIFaIwL6YxBksIJhK5rMxgqJ1dFiU/SunXdFmh0Tak/LBu4xq7rxyLa9zUvlSYtiVqh66NTMFEwHQYDVR0OBBYEFNty9vVEtmHp1Cg1IfKXsFSVf/PBMB8GA1UdIwQYMBaAFNty9vVEtmHp1Cg1IfKXsFSVf/PBMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSQAwRgIhAJ0szrr53Ap8dHxnXnvzJ3D8vpCR9Jzr3W+ofmUzFnurAiEAh5fyvQrqK9WPopKQGgdXzqsXrURRAjPFmXzz5pDB3cA=";

    #[test]
    fn common_name_comes_from_the_subject() {
        let der = base64::engine::general_purpose::STANDARD
            .decode(ALICE)
            .unwrap();
        assert_eq!(super::common_name(&der).as_deref(), Some("alice"));
        assert_eq!(super::common_name(b"not a certificate"), None);
    }
}
