//! TLS for `https` listeners: certificates chosen by SNI, ALPN for h2 and
//! HTTP/1.1, and certificates reloaded with the configuration.
//!
//! A listener's [`Certificates`] holds every certificate and key it
//! serves, the first being the default (for clients that send no name, or
//! a name no certificate covers). At handshake, the first certificate
//! valid for the client's name (webpki's own name check, so wildcards work)
//! is chosen. The list sits behind an `ArcSwap`: a reload reads the files
//! again and swaps it, so new handshakes get the new certificates and
//! connections already open keep theirs.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The certificates of one listener, swapped on reload.
#[derive(Debug)]
pub struct Certificates {
    current: ArcSwap<Vec<Arc<CertifiedKey>>>,
}

/// Certificates read from files, ready to install.
pub struct Loaded(Vec<Arc<CertifiedKey>>);

/// Reads one certificate chain and its key.
fn load_pair(cert_file: &str, key_file: &str) -> anyhow::Result<Arc<CertifiedKey>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(Path::new(cert_file))
        .with_context(|| format!("{cert_file}: cannot read the certificate"))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{cert_file}: not a PEM certificate chain"))?;
    if certs.is_empty() {
        anyhow::bail!("{cert_file}: no certificate in the file");
    }
    let key = PrivateKeyDer::from_pem_file(Path::new(key_file))
        .with_context(|| format!("{key_file}: cannot read a PEM private key"))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let ck = CertifiedKey::from_der(certs, key, &provider)
        .with_context(|| format!("{cert_file} and {key_file} do not make a usable pair"))?;
    Ok(Arc::new(ck))
}

/// Every certificate of `tls`, the default first.
fn load(tls: &loom_config::Tls) -> anyhow::Result<Vec<Arc<CertifiedKey>>> {
    std::iter::once((&tls.cert_file, &tls.key_file))
        .chain(tls.sni.iter().map(|p| (&p.cert_file, &p.key_file)))
        .map(|(c, k)| load_pair(c, k))
        .collect()
}

impl Certificates {
    /// Loads the certificates of `tls`.
    pub fn load(tls: &loom_config::Tls) -> anyhow::Result<Arc<Certificates>> {
        Ok(Arc::new(Certificates {
            current: ArcSwap::from_pointee(load(tls)?),
        }))
    }

    /// Reads the files of `tls` for a reload: nothing changes until
    /// [`Certificates::install`], so a reload can read every listener's
    /// files before it changes any.
    pub fn read(tls: &loom_config::Tls) -> anyhow::Result<Loaded> {
        Ok(Loaded(load(tls)?))
    }

    /// Serves `loaded` to new handshakes.
    pub fn install(&self, loaded: Loaded) {
        self.current.store(Arc::new(loaded.0));
    }

    /// A server configuration over these certificates (TLS 1.2 and 1.3),
    /// offering h2 and HTTP/1.1.
    pub fn server_config(self: &Arc<Self>) -> anyhow::Result<Arc<ServerConfig>> {
        let mut config = ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// A server configuration for QUIC over these certificates: TLS 1.3,
    /// offering h3.
    pub fn quic_config(self: &Arc<Self>) -> anyhow::Result<ServerConfig> {
        let mut config = ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h3".to_vec()];
        config.max_early_data_size = 0;
        Ok(config)
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let list = self.current.load();
        let name = hello
            .server_name()
            .and_then(|n| ServerName::try_from(n).ok());
        if let Some(name) = name {
            let covers = |ck: &&Arc<CertifiedKey>| {
                ck.end_entity_cert()
                    .ok()
                    .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
                    .is_some_and(|ee| ee.verify_is_valid_for_subject_name(&name).is_ok())
            };
            if let Some(ck) = list.iter().find(covers) {
                return Some(ck.clone());
            }
        }
        list.first().cloned()
    }
}
