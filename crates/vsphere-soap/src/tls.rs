//! TLS settings: verified by default, a CA file, SHA-256 thumbprint pinning, or insecure by name.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::Error;

/// How the server certificate is checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsMode {
    /// Verify the chain and host name against the operating system's trust store (the default).
    #[default]
    SystemRoots,
    /// Verify the chain and host name against the CA certificates in this PEM file only.
    CaFile(PathBuf),
    /// Accept only a server whose leaf certificate has this SHA-256 fingerprint (no chain or name check).
    Thumbprint(Thumbprint),
    /// Accept any certificate. For labs only; must be asked for by this name.
    InsecureSkipVerify,
}

/// A SHA-256 certificate fingerprint, written `AB:CD:...` (32 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Thumbprint(pub [u8; 32]);

impl Thumbprint {
    /// The fingerprint of a DER certificate.
    pub fn of_der(der: &[u8]) -> Self {
        let d = ring::digest::digest(&ring::digest::SHA256, der);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Thumbprint(out)
    }
}

impl fmt::Display for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Thumbprint({self})")
    }
}

impl FromStr for Thumbprint {
    type Err = Error;

    /// Accepts hex with or without `:` separators, any case.
    fn from_str(s: &str) -> Result<Self, Error> {
        let hex: Vec<u8> = s.bytes().filter(|b| !matches!(b, b':' | b' ' | b'-')).collect();
        let bad = || Error::Config(format!("not a SHA-256 thumbprint: {s:?}"));
        if hex.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, pair) in hex.chunks(2).enumerate() {
            let s = std::str::from_utf8(pair).map_err(|_| bad())?;
            out[i] = u8::from_str_radix(s, 16).map_err(|_| bad())?;
        }
        Ok(Thumbprint(out))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls configuration for a mode: what [`crate::HttpTransport`] uses, and what other
/// clients that must check certificates the same way (a BMC's Redfish service) hand to their
/// HTTP client (`reqwest::ClientBuilder::use_preconfigured_tls`). Errors are
/// [`Error::Config`] naming the CA file or the trust store.
pub fn client_config(mode: &TlsMode) -> Result<ClientConfig, Error> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?;
    let config = match mode {
        TlsMode::SystemRoots => {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(Error::Config(
                    "no CA certificates in the system trust store; give a CA file or a thumbprint".into(),
                ));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsMode::CaFile(path) => {
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| Error::Config(format!("CA file {}: {e}", path.display())))?;
            for cert in certs {
                let cert = cert.map_err(|e| Error::Config(format!("CA file {}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| Error::Config(format!("CA file {}: {e}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(Error::Config(format!(
                    "CA file {} holds no certificate",
                    path.display()
                )));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsMode::Thumbprint(t) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                expected: Some(*t),
                algs: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
        TlsMode::InsecureSkipVerify => {
            tracing::warn!("TLS certificate verification is disabled (insecure mode)");
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned {
                    expected: None,
                    algs: provider.signature_verification_algorithms,
                }))
                .with_no_client_auth()
        }
    };
    Ok(config)
}

/// Checks the leaf's fingerprint (or nothing, when `expected` is `None`); handshake signatures are
/// always verified, so the server must hold the certificate's key.
#[derive(Debug)]
struct Pinned {
    expected: Option<Thumbprint>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.expected {
            None => Ok(ServerCertVerified::assertion()),
            Some(expected) => {
                let got = Thumbprint::of_der(end_entity);
                if got == expected {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(rustls::Error::General(format!(
                        "server certificate thumbprint {got} does not match the pinned {expected}"
                    )))
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// An error and its sources as one text (`outer: inner: ...`), and whether TLS failed anywhere
/// in the chain (a rustls error, one inside an I/O error, or a text that says so): reqwest reports
/// a failed handshake as a connect error.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> (String, bool) {
    let mut text = e.to_string();
    let mut tls = false;
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        let io_tls = s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
        if s.downcast_ref::<rustls::Error>().is_some() || io_tls || looks_like_tls(&t) {
            tls = true;
        }
        text.push_str(": ");
        text.push_str(&t);
        src = s.source();
    }
    (text, tls)
}

/// Whether an error text is about the TLS handshake (rustls and hyper word it many ways).
pub fn looks_like_tls(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "certificate",
        "tls",
        "handshake",
        "invalidcontenttype",
        "corrupt message",
        "alert",
        "ssl",
    ]
    .iter()
    .any(|w| t.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_round_trip() {
        let t = Thumbprint::of_der(b"hello");
        let s = t.to_string();
        assert_eq!(s.len(), 32 * 3 - 1);
        assert_eq!(s.parse::<Thumbprint>().unwrap(), t);
        assert_eq!(
            s.replace(':', "").to_lowercase().parse::<Thumbprint>().unwrap(),
            t
        );
        assert!("AB:CD".parse::<Thumbprint>().is_err());
        assert!("zz".repeat(32).parse::<Thumbprint>().is_err());
    }
}
