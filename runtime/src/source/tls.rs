//! TLS for broker connections (rustls): a CA file or the system roots, optional client
//! certificates, and an explicit `insecure` mode for brokers with unverifiable certificates.

use crate::config::TlsConfig;
use anyhow::{Context, bail};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::Path;
use std::sync::Arc;

/// rustls needs one process-wide crypto provider; several crates in the tree could offer one.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

pub fn tls_client_config(tls: &TlsConfig) -> anyhow::Result<ClientConfig> {
    install_crypto_provider();
    let builder = ClientConfig::builder();
    let builder = if tls.insecure {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate::new()))
    } else {
        builder.with_root_certificates(roots(tls.ca_file.as_deref())?)
    };
    match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let key = read_key(key)?;
            builder.with_client_auth_cert(read_certs(cert)?, key).context("client certificate and key do not match")
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

fn roots(ca_file: Option<&Path>) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(file) => {
            for cert in read_certs(file)? {
                roots.add(cert).with_context(|| format!("{}: not a usable CA certificate", file.display()))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                bail!("no system CA certificates found (install ca-certificates, or set tls.ca_file)");
            }
        }
    }
    Ok(roots)
}

fn read_certs(file: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: not PEM certificates", file.display()))?;
    if certs.is_empty() {
        bail!("{}: holds no PEM certificate", file.display());
    }
    Ok(certs)
}

fn read_key(file: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .with_context(|| format!("{}: not a PEM private key", file.display()))?
        .with_context(|| format!("{}: holds no private key", file.display()))
}

/// For `tls.insecure: true` only: the connection is encrypted but the broker is not
/// authenticated. The source logs a warning at every connect.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl AcceptAnyCertificate {
    fn new() -> Self {
        AcceptAnyCertificate(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
    }
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
