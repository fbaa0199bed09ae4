//! The TLS side of `--web-config-file`: a rustls server configuration from
//! `tls_server_config`, on the `ring` provider (rustls's default,
//! aws-lc-rs, needs cmake for every release target; ring builds with cc).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use super::web_config::{ClientAuth, Pem, TlsConfig, TlsVersion, WebConfigError};

fn invalid(key: &'static str, why: impl Into<String>) -> WebConfigError {
    WebConfigError::Invalid { key, why: why.into() }
}

/// The PEM's text, and how to name it in an error.
fn read(pem: &Pem, key: &'static str) -> Result<(Vec<u8>, String), WebConfigError> {
    match pem {
        Pem::File(path) => std::fs::read(path)
            .map(|b| (b, path.display().to_string()))
            .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display()))),
        Pem::Inline(text) => Ok((text.clone().into_bytes(), "the inline PEM".to_owned())),
    }
}

fn certificates(pem: &Pem, key: &'static str) -> Result<Vec<CertificateDer<'static>>, WebConfigError> {
    let (bytes, name) = read(pem, key)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(key, format!("{name}: not PEM certificates ({e})")))?;
    if certs.is_empty() {
        return Err(invalid(key, format!("{name}: no certificate in it")));
    }
    Ok(certs)
}

fn private_key(pem: &Pem) -> Result<PrivateKeyDer<'static>, WebConfigError> {
    const KEY: &str = "tls_server_config.key_file";
    let (bytes, name) = read(pem, KEY)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| invalid(KEY, format!("{name}: no usable private key ({e})")))
}

fn client_verifier(
    tls: &TlsConfig,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, WebConfigError> {
    const KEY: &str = "tls_server_config.client_ca_file";
    let Some(ca) = tls.client_ca.as_ref().filter(|_| tls.client_auth != ClientAuth::NoClientCert) else {
        return Ok(WebPkiClientVerifier::no_client_auth());
    };
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca, KEY)? {
        roots.add(cert).map_err(|e| invalid(KEY, format!("not a usable CA certificate ({e})")))?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let builder = if tls.client_auth == ClientAuth::VerifyClientCertIfGiven { builder.allow_unauthenticated() } else { builder };
    builder.build().map_err(|e| invalid(KEY, e.to_string()))
}

/// The server configuration `tls` describes, with its files read now.
pub(crate) fn server_config(tls: &TlsConfig) -> Result<Arc<ServerConfig>, WebConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [(TlsVersion::Tls12, &rustls::version::TLS12), (TlsVersion::Tls13, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(v, _)| (tls.min_version..=tls.max_version).contains(v))
            .map(|(_, p)| p)
            .collect();
    let chain = certificates(&tls.cert, "tls_server_config.cert_file")?;
    let key = private_key(&tls.key)?;
    let verifier = client_verifier(tls, &provider)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| invalid("tls_server_config.min_version", e.to_string()))?
        .with_client_cert_verifier(verifier)
        // rustls checks that the key is the certificate's.
        .with_single_cert(chain, key)
        .map_err(|e| invalid("tls_server_config.key_file", format!("does not go with the certificate ({e})")))?;
    // HTTP/1.1 only (the server is hyper's http1); saying so lets a client
    // that offers h2 fall back instead of failing.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A CA, and a server certificate for localhost it signed: (CA PEM, cert PEM, key PEM).
    pub(crate) fn ca_and_server() -> (String, String, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(params, &ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap().signed_by(&key, &issuer).unwrap();
        (ca.pem(), cert.pem(), key.serialize_pem())
    }

    fn config(cert: &str, key: &str, ca: Option<&str>) -> TlsConfig {
        TlsConfig {
            cert: Pem::Inline(cert.into()),
            key: Pem::Inline(key.into()),
            client_auth: if ca.is_some() { ClientAuth::RequireAndVerifyClientCert } else { ClientAuth::NoClientCert },
            client_ca: ca.map(|c| Pem::Inline(c.into())),
            min_version: TlsVersion::Tls12,
            max_version: TlsVersion::Tls13,
        }
    }

    #[test]
    fn builds_from_a_certificate_and_its_key_with_or_without_client_certificates() {
        let (ca, cert, key) = ca_and_server();
        assert_eq!(server_config(&config(&cert, &key, None)).unwrap().alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(server_config(&config(&cert, &key, Some(&ca))).is_ok());
        let tls13 = TlsConfig { min_version: TlsVersion::Tls13, ..config(&cert, &key, None) };
        assert!(server_config(&tls13).is_ok());
    }

    #[test]
    fn names_what_is_wrong_with_the_files() {
        let (ca, cert, key) = ca_and_server();
        let (_, _, other_key) = ca_and_server();
        let e = |c: TlsConfig| server_config(&c).unwrap_err().to_string();
        assert!(e(config(&cert, &other_key, None)).starts_with("tls_server_config.key_file: does not go with the certificate"));
        assert!(e(config("", &key, None)).contains("tls_server_config.cert_file: the inline PEM: no certificate"));
        assert!(e(config(&cert, &cert, None)).starts_with("tls_server_config.key_file: the inline PEM: no usable private key"));
        let missing = TlsConfig { cert: Pem::File("/nonexistent/server.crt".into()), ..config(&cert, &key, Some(&ca)) };
        assert!(e(missing).starts_with("tls_server_config.cert_file: cannot read /nonexistent/server.crt: "));
    }
}
