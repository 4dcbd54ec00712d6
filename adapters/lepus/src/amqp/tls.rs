//! TLS for `amqps://` addresses: the certificate authorities to trust besides the system's
//! (a private CA), and the client certificate to present, both as PEM.
//!
//! Only `amqps://` addresses use these settings; `amqp://` ones ignore them. TLS needs the
//! `rustls` feature: without it an `amqps://` address is an
//! [`ErrorKind::FeatureDisabled`] error naming the feature, before anything is connected.
//! With it, the settings are checked before the first connection (and when read from files
//! or the environment): PEM that holds no certificate or no key, or that rustls refuses, is
//! an [`ErrorKind::InvalidConfig`] error naming the setting, never a panic and never a
//! handshake that fails later for a reason nobody can see.

use std::fmt;
use std::path::Path;

use crate::error::{Error, ErrorKind, Result};

/// The environment variable with the path of the PEM file of CA certificates to trust.
pub const TLS_CA_VAR: &str = "AMQP_TLS_CA";
/// The environment variable with the path of the client certificate chain (PEM).
pub const TLS_CERT_VAR: &str = "AMQP_TLS_CERT";
/// The environment variable with the path of the client certificate's private key (PEM).
pub const TLS_KEY_VAR: &str = "AMQP_TLS_KEY";

/// A client certificate and its private key, both PEM, presented to brokers that ask for one
/// (RabbitMQ's `ssl_options.verify = verify_peer`). `Debug` does not show the key.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsIdentity {
    cert_pem: String,
    key_pem: String,
}

impl TlsIdentity {
    /// The certificate chain (PEM: the client's certificate first, then intermediates) and
    /// its private key (PEM: PKCS#8, PKCS#1 or SEC1). Checked when connecting.
    pub fn from_pem(cert_pem: impl Into<String>, key_pem: impl Into<String>) -> Self {
        TlsIdentity {
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
        }
    }

    /// The certificate chain, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &format_args!("(hidden)"))
            .finish()
    }
}

/// Whether `addr` (one address) asks for TLS.
pub(crate) fn is_tls(addr: &str) -> bool {
    addr.get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("amqps://"))
}

/// Reads a PEM file named by a setting (`what` says what it holds, for the messages).
pub(crate) fn read_pem(path: &Path, setting: &'static str, what: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        invalid(
            setting,
            format!("cannot read {what} from {}: {e}", path.display()),
        )
    })
}

pub(crate) fn invalid(setting: &'static str, why: String) -> Error {
    Error::new(ErrorKind::InvalidConfig { setting }).context(why)
}

/// The error of an `amqps://` address in a build without `rustls`.
#[cfg(not(feature = "rustls"))]
pub(crate) fn feature_disabled(shown: &str) -> Error {
    Error::new(ErrorKind::FeatureDisabled { feature: "rustls" }).context(format!(
        "{shown} is an amqps:// (TLS) address, and TLS is not built in: enable lepus's \
         `rustls` feature (lepus = {{ version = \"..\", features = [\"rustls\"] }})"
    ))
}

/// Checks the CA certificates: valid PEM, at least one certificate, and rustls takes them
/// as roots.
///
/// # Errors
/// [`ErrorKind::InvalidConfig`] naming `setting`.
#[cfg(feature = "rustls")]
pub(crate) fn check_ca(pem: &str, setting: &'static str) -> Result<()> {
    use lapin::tcp::RustlsConnectorConfig;
    let roots = certificates(pem, setting, "the CA certificates")?;
    RustlsConnectorConfig::new_with_platform_verifier()
        .with_parsable_certificates(roots)
        .connector_with_no_client_auth()
        .map(drop)
        .map_err(|e| {
            invalid(
                setting,
                format!("the CA certificates are not usable as TLS roots: {e}"),
            )
        })
}

/// Checks a client identity: a certificate chain and a private key that rustls accepts
/// together, beside the CA certificates `ca` (already checked) if any, as lapin will use them.
///
/// # Errors
/// [`ErrorKind::InvalidConfig`] naming `setting`.
#[cfg(feature = "rustls")]
pub(crate) fn check_identity(
    identity: &TlsIdentity,
    ca: Option<&str>,
    setting: &'static str,
) -> Result<()> {
    use lapin::tcp::RustlsConnectorConfig;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::PrivateKeyDer;
    let chain = certificates(&identity.cert_pem, setting, "the client certificate")?;
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).map_err(|e| {
        invalid(
            setting,
            format!(
                "the client key is no PEM private key (`-----BEGIN PRIVATE KEY-----`, PKCS#8, \
                 PKCS#1 or SEC1): {e}"
            ),
        )
    })?;
    let roots = match ca {
        Some(pem) => certificates(pem, setting, "the CA certificates")?,
        None => Vec::new(),
    };
    // Without a CA of ours the system's roots must exist: the platform verifier needs roots.
    RustlsConnectorConfig::new_with_platform_verifier()
        .with_parsable_certificates(roots)
        .connector_with_single_cert(chain, key)
        .map(drop)
        .map_err(|e| {
            invalid(
                setting,
                format!(
                    "rustls refused the client certificate and key (or, without a CA of \
                     ours, found no trusted roots on this system): {e}"
                ),
            )
        })
}

/// The certificates of `pem`; an error when it is not PEM or holds none.
#[cfg(feature = "rustls")]
fn certificates(
    pem: &str,
    setting: &'static str,
    what: &str,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| invalid(setting, format!("{what} are not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(
            setting,
            format!("{what} hold no certificate (no `-----BEGIN CERTIFICATE-----` block)"),
        ));
    }
    Ok(certs)
}

/// lapin's TLS settings for `ca` and `identity` (already checked).
#[cfg(feature = "rustls")]
pub(crate) fn lapin_config(
    ca: Option<&str>,
    identity: Option<&TlsIdentity>,
) -> lapin::tcp::OwnedTLSConfig {
    lapin::tcp::OwnedTLSConfig {
        identity: identity.map(|id| lapin::tcp::OwnedIdentity::PKCS8 {
            pem: id.cert_pem.as_bytes().to_vec(),
            key: id.key_pem.as_bytes().to_vec(),
        }),
        cert_chain: ca.map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        assert!(is_tls("amqps://h:5671/%2f"));
        assert!(is_tls("AMQPS://h"));
        assert!(!is_tls("amqp://h:5672/%2f"));
        assert!(!is_tls("amqps"));
        assert!(!is_tls("é"));
    }

    #[test]
    fn debug_hides_the_key() {
        let id = TlsIdentity::from_pem("CERT", "-----BEGIN PRIVATE KEY-----\nsecret");
        let shown = format!("{id:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("hidden"), "{shown}");
    }

    #[cfg(feature = "rustls")]
    #[test]
    fn bad_pem_is_an_invalid_config_error() {
        let setting = "tls_ca_pem";
        for (pem, says) in [
            ("", "no certificate"),
            ("not a certificate at all", "no certificate"),
            (
                "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n",
                "no certificate",
            ),
            (
                "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n",
                "not valid PEM",
            ),
            (
                "-----BEGIN CERTIFICATE-----\nMIIB\n",
                "not valid PEM",
            ),
            // Base64 of bytes that are no X.509 certificate: rustls refuses the root.
            (
                "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
                "not usable as TLS roots",
            ),
        ] {
            let err = check_ca(pem, setting).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidConfig { setting }, "{pem:?}");
            assert!(err.to_string().contains(says), "{pem:?}: {err}");
        }
    }

    #[cfg(feature = "rustls")]
    #[test]
    fn a_bad_identity_is_an_invalid_config_error() {
        let setting = "tls_identity";
        let id = TlsIdentity::from_pem("nothing", "nothing");
        let err = check_identity(&id, None, setting).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig { setting });
        assert!(err.to_string().contains("no certificate"), "{err}");
    }
}
