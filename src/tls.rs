//! TLS with rustls: PEM files → rustls configs, for listeners (termination,
//! optional mTLS), upstreams (SNI, a private CA, client certificates) and
//! `https://` webhooks. Nothing else in breakwater configures rustls.
//!
//! **One crypto provider, `ring`.** rustls needs a provider for its
//! primitives; `ring` builds with a C compiler alone, where `aws-lc-rs`
//! also needs cmake (and Go for its FIPS build), which the build machines
//! and the `rust` image's slim variants lack. `ring` also compiles faster
//! on 2 cores and gives a smaller binary. Both are maintained by the
//! rustls project's partners; breakwater needs neither FIPS nor
//! post-quantum key exchange today, so the simpler build wins.
//!
//! **Files are read every time a config is built**, never cached here:
//! the data plane builds a snapshot on every reload, and `reload.rs`
//! watches these files' content, so a rotated certificate is served to
//! the next handshake while connections already open keep theirs.
//!
//! **Trust.** With no `ca`, upstreams and webhooks are verified against
//! the system trust store (`rustls-native-certs`: `/etc/ssl/certs`, or
//! `SSL_CERT_FILE` / `SSL_CERT_DIR`), read once per process; the
//! container image ships Debian's `ca-certificates` for it. With a `ca`,
//! only that bundle is trusted.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// ALPN protocol ids a listener offers, in preference order.
pub const SERVER_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why TLS material could not be used. Paths are named; file contents
/// never are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// The file holds no PEM block of the kind needed.
    #[error("{path}: no PEM {what} found")]
    Missing {
        /// The file.
        path: String,
        /// `certificate` or `private key`.
        what: &'static str,
    },
    /// The file has the right blocks but rustls cannot use them.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What rustls objected to.
        reason: String,
    },
}

/// The crypto provider every config here is built with.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.display().to_string(),
        reason: error.to_string(),
    })
}

fn invalid(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::Invalid {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Every certificate in a PEM file, in file order (a chain: leaf first).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| invalid(path, error))?;
    if certs.is_empty() {
        return Err(TlsError::Missing {
            path: path.display().to_string(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|error| match error {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Missing {
            path: path.display().to_string(),
            what: "private key",
        },
        other => invalid(path, other),
    })
}

/// A trust store of exactly the certificates in a PEM bundle.
pub fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots
            .add(cert)
            .map_err(|error| invalid(path, format!("not a usable CA certificate: {error}")))?;
    }
    Ok(roots)
}

/// The system trust store, read once per process.
pub fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::warn!(%error, "Could not read part of the system trust store.");
            }
            let mut roots = RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!(ignored, "The system trust store is empty: TLS to upstreams and webhooks without a `ca` will fail verification.");
            }
            Arc::new(roots)
        })
        .clone()
}

/// A listener's server config: its certificate chain and key, ALPN `h2`
/// then `http/1.1`, and, with `client_ca`, a required client certificate
/// signed by it (mTLS).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<ServerConfig, TlsError> {
    let chain = read_certs(cert)?;
    let private_key = read_key(key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| invalid(cert, error))?;
    let builder = match client_ca {
        Some(ca) => {
            let roots = read_roots(ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|error| invalid(ca, error))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, private_key)
        .map_err(|error| invalid(key, format!("does not fit the certificate: {error}")))?;
    config.alpn_protocols = SERVER_ALPN.iter().map(|id| id.to_vec()).collect();
    Ok(config)
}

/// Where a client's trust and identity come from.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientFiles<'a> {
    /// PEM CA bundle to trust instead of the system store.
    pub ca: Option<&'a Path>,
    /// PEM client certificate chain and its key, for mTLS.
    pub identity: Option<(&'a Path, &'a Path)>,
}

/// A client config offering `alpn` (none: no ALPN extension).
pub fn client_config(files: ClientFiles<'_>, alpn: &[&[u8]]) -> Result<ClientConfig, TlsError> {
    let roots = match files.ca {
        Some(ca) => Arc::new(read_roots(ca)?),
        None => system_roots(),
    };
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|error| TlsError::Invalid {
            path: files.ca.map_or_else(
                || "system trust store".to_owned(),
                |ca| ca.display().to_string(),
            ),
            reason: error.to_string(),
        })?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::Invalid {
            path: String::new(),
            reason: error.to_string(),
        })?
        .with_webpki_verifier(verifier);
    let mut config = match files.identity {
        Some((cert, key)) => {
            let chain = read_certs(cert)?;
            let private_key = read_key(key)?;
            builder
                .with_client_auth_cert(chain, private_key)
                .map_err(|error| invalid(key, format!("does not fit the certificate: {error}")))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|id| id.to_vec()).collect();
    Ok(config)
}

/// `name` as a TLS server name (a DNS name or an IP address).
pub fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    // An IPv6 authority host comes bracketed: "[::1]".
    let bare = name
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(name);
    ServerName::try_from(bare.to_owned()).map_err(|_| {
        format!("{name:?} is not a valid TLS server name (a DNS name or an IP address)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    struct Material {
        ca: String,
        cert: String,
        key: String,
        other_key: String,
    }

    fn material() -> Material {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["app.internal".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        Material {
            ca: ca.pem(),
            cert: cert.pem(),
            key: key.serialize_pem(),
            other_key: rcgen::KeyPair::generate().unwrap().serialize_pem(),
        }
    }

    #[test]
    fn a_server_config_offers_h2_then_http1_and_requires_client_certs_with_a_ca() {
        let dir = tempfile::tempdir().unwrap();
        let m = material();
        let cert = write(dir.path(), "cert.pem", &m.cert);
        let key = write(dir.path(), "key.pem", &m.key);
        let ca = write(dir.path(), "ca.pem", &m.ca);
        let plain = server_config(&cert, &key, None).unwrap();
        assert_eq!(plain.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert!(server_config(&cert, &key, Some(&ca)).is_ok());
    }

    #[test]
    fn bad_files_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let m = material();
        let cert = write(dir.path(), "cert.pem", &m.cert);
        let key = write(dir.path(), "key.pem", &m.key);
        let other = write(dir.path(), "other.pem", &m.other_key);
        let empty = write(dir.path(), "empty.pem", "nothing here\n");
        let missing = dir.path().join("missing.pem");

        let error = server_config(&missing, &key, None).unwrap_err();
        assert!(matches!(error, TlsError::Read { .. }), "{error}");
        assert!(error.to_string().contains("missing.pem"), "{error}");
        let error = server_config(&empty, &key, None).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("{}: no PEM certificate found", empty.display())
        );
        let error = server_config(&cert, &empty, None).unwrap_err();
        assert!(error.to_string().contains("no PEM private key"), "{error}");
        let error = server_config(&cert, &other, None).unwrap_err();
        assert!(error.to_string().contains("does not fit"), "{error}");
    }

    #[test]
    fn a_client_config_trusts_its_ca_and_offers_the_alpn_given() {
        let dir = tempfile::tempdir().unwrap();
        let m = material();
        let ca = write(dir.path(), "ca.pem", &m.ca);
        let config = client_config(
            ClientFiles {
                ca: Some(&ca),
                identity: None,
            },
            &[b"h2"],
        )
        .unwrap();
        assert_eq!(config.alpn_protocols, [b"h2".to_vec()]);
    }

    #[test]
    fn server_names_accept_dns_names_and_addresses() {
        assert!(server_name("app.internal").is_ok());
        assert!(server_name("10.0.0.1").is_ok());
        assert!(server_name("[::1]").is_ok());
        assert!(server_name("not a name").is_err());
    }
}
