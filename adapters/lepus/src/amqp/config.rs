//! Configuration of the RabbitMQ transport.

use crate::amqp::tls::{self, TlsIdentity, TLS_CA_VAR, TLS_CERT_VAR, TLS_KEY_VAR};
use crate::protocol::DEFAULT_MAX_PAYLOAD;
use std::path::Path;
use std::time::Duration;

/// RabbitMQ on this machine with its default port and virtual host: what `.ci/run` exports
/// as `AMQP_ADDR` and what error messages suggest. Nothing connects to it unless asked to:
/// an unset `AMQP_ADDR` is an error everywhere ([`AmqpConfig::from_env`], [`crate::connect`],
/// the `lepus` command line) and a skip in `lepus::testing`, never a silent default.
pub const LOCAL_ADDR: &str = "amqp://127.0.0.1:5672/%2f";

/// Configuration of [`crate::AmqpTransport`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AmqpConfig {
    /// Broker URI, `amqp://user:pass@host:port/vhost`, or several separated by commas (the
    /// nodes of a cluster): connecting tries them in turn, each within
    /// [`AmqpConfig::connect_timeout`], and after a lost connection starts at the next one.
    pub addr: String,
    /// Largest body accepted for publishing, in bytes.
    pub max_payload: usize,
    /// How long connecting to one address may take, TCP connect and AMQP handshake together
    /// (a frozen node accepts TCP and never answers): past it the next address is tried.
    pub connect_timeout: Duration,
    /// Connection name shown in the RabbitMQ management UI.
    pub connection_name: Option<String>,
    /// How long a publish may take in all: waiting for a lost connection to come back,
    /// sending again after it did, and waiting for the broker's confirmation. Past it the
    /// publish is an error (the message may or may not have been stored; it was not
    /// confirmed).
    pub send_timeout: Duration,
    /// How long the first connection may be retried, with backoff ([`crate::amqp::FIRST_BACKOFF`]
    /// doubling to [`crate::amqp::MAX_BACKOFF`]), while the broker is not there yet (Celery's
    /// retry on start-up): a service started before its broker, or during a broker restart,
    /// waits instead of exiting. Only failures that may pass are retried (nothing listening,
    /// connection reset, no answer in time); a wrong protocol or refused credentials fail at
    /// once. Default [`Duration::ZERO`]: one round over the addresses, then the error, which
    /// is what tools, tests and health-checked deployments (the orchestrator restarts the
    /// process) want; a long-running service sets a bound such as 60 s.
    pub startup_timeout: Duration,
    /// CA certificates (PEM) trusted for `amqps://` addresses besides the system's roots: the
    /// private CA that signed the broker's certificate. Set with [`AmqpConfig::tls_ca_pem`],
    /// [`AmqpConfig::tls_ca_file`] or `AMQP_TLS_CA` ([`AmqpConfig::from_env`]); see
    /// [`crate::amqp::tls`].
    pub tls_ca_pem: Option<String>,
    /// The client certificate presented on `amqps://` connections, if any (see
    /// [`AmqpConfig::tls_identity`]).
    pub tls_identity: Option<TlsIdentity>,
}

impl AmqpConfig {
    /// Configuration for `addr`, other settings at their defaults.
    pub fn new(addr: impl Into<String>) -> Self {
        AmqpConfig {
            addr: addr.into(),
            max_payload: DEFAULT_MAX_PAYLOAD,
            connect_timeout: Duration::from_secs(5),
            connection_name: None,
            send_timeout: Duration::from_secs(30),
            startup_timeout: Duration::ZERO,
            tls_ca_pem: None,
            tls_identity: None,
        }
    }

    /// Configuration for the address in `AMQP_ADDR`, with the TLS settings of the
    /// environment ([`AmqpConfig::tls_from_env`]).
    ///
    /// # Errors
    /// [`crate::ErrorKind::InvalidConfig`] when `AMQP_ADDR` is unset or empty: no broker is
    /// chosen by absence (the message says how to choose one); the errors of
    /// [`AmqpConfig::tls_from_env`].
    pub fn from_env() -> crate::Result<Self> {
        AmqpConfig::from_var(std::env::var("AMQP_ADDR").ok().as_deref())?.tls_from_env()
    }

    /// Adds the TLS settings of the environment, each a path to a PEM file: `AMQP_TLS_CA`
    /// (CA certificates to trust, [`AmqpConfig::tls_ca_file`]), `AMQP_TLS_CERT` and
    /// `AMQP_TLS_KEY` (a client certificate and its key, both or neither,
    /// [`AmqpConfig::tls_identity_files`]). Unset or empty variables change nothing.
    /// [`crate::connect`] and [`crate::connect_to`] read them too.
    ///
    /// # Errors
    /// [`crate::ErrorKind::InvalidConfig`] naming the variable: a file that cannot be read,
    /// PEM that holds no certificate or key (with the `rustls` feature, anything rustls
    /// refuses), or only one of `AMQP_TLS_CERT` and `AMQP_TLS_KEY`.
    pub fn tls_from_env(self) -> crate::Result<Self> {
        let var = |name| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        self.tls_from_vars(var(TLS_CA_VAR), var(TLS_CERT_VAR), var(TLS_KEY_VAR))
    }

    fn tls_from_vars(
        mut self,
        ca: Option<String>,
        cert: Option<String>,
        key: Option<String>,
    ) -> crate::Result<Self> {
        if let Some(path) = ca {
            let pem = tls::read_pem(Path::new(path.trim()), TLS_CA_VAR, "the CA certificates")?;
            #[cfg(feature = "rustls")]
            tls::check_ca(&pem, TLS_CA_VAR)?;
            self.tls_ca_pem = Some(pem);
        }
        match (cert, key) {
            (None, None) => {}
            (Some(cert), Some(key)) => {
                let cert = tls::read_pem(
                    Path::new(cert.trim()),
                    TLS_CERT_VAR,
                    "the client certificate",
                )?;
                let key = tls::read_pem(Path::new(key.trim()), TLS_KEY_VAR, "the client key")?;
                let identity = TlsIdentity::from_pem(cert, key);
                #[cfg(feature = "rustls")]
                tls::check_identity(&identity, self.tls_ca_pem.as_deref(), TLS_CERT_VAR)?;
                self.tls_identity = Some(identity);
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(tls::invalid(
                    TLS_CERT_VAR,
                    format!(
                        "{TLS_CERT_VAR} and {TLS_KEY_VAR} name a client certificate and its \
                         key: set both or neither"
                    ),
                ));
            }
        }
        Ok(self)
    }

    fn from_var(addr: Option<&str>) -> crate::Result<Self> {
        let addr = addr.unwrap_or_default();
        if addr.trim().is_empty() {
            return Err(crate::Error::new(crate::ErrorKind::InvalidConfig {
                setting: "AMQP_ADDR",
            })
            .context(format!(
                "AMQP_ADDR is not set: set it to the broker's address, for example \
                 AMQP_ADDR={LOCAL_ADDR} for RabbitMQ on this machine"
            )));
        }
        Ok(AmqpConfig::new(addr.trim()))
    }

    /// Sets how long the first connection may be retried (see
    /// [`AmqpConfig::startup_timeout`]).
    #[must_use]
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Sets the body size limit.
    #[must_use]
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// Sets the connect timeout per address (see [`AmqpConfig::connect_timeout`]).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the send timeout (see [`AmqpConfig::send_timeout`]).
    #[must_use]
    pub fn send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = timeout;
        self
    }

    /// Sets the connection name.
    #[must_use]
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = Some(name.into());
        self
    }

    /// Trusts the CA certificates in `pem` (one or more `-----BEGIN CERTIFICATE-----` blocks)
    /// for `amqps://` addresses, besides the system's roots. Checked when connecting: bad PEM
    /// is an [`crate::ErrorKind::InvalidConfig`] error (setting `tls_ca_pem`).
    #[must_use]
    pub fn tls_ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.tls_ca_pem = Some(pem.into());
        self
    }

    /// Trusts the CA certificates in the PEM file at `path` (see [`AmqpConfig::tls_ca_pem`]).
    ///
    /// # Errors
    /// [`crate::ErrorKind::InvalidConfig`] (setting `tls_ca_pem`) when the file cannot be read
    /// or, with the `rustls` feature, holds no certificate rustls accepts.
    pub fn tls_ca_file(mut self, path: impl AsRef<Path>) -> crate::Result<Self> {
        let pem = tls::read_pem(path.as_ref(), "tls_ca_pem", "the CA certificates")?;
        #[cfg(feature = "rustls")]
        tls::check_ca(&pem, "tls_ca_pem")?;
        self.tls_ca_pem = Some(pem);
        Ok(self)
    }

    /// Presents `identity`, a client certificate and its key, on `amqps://` connections.
    /// Checked when connecting: bad PEM, or a key that does not go with the certificate, is
    /// an [`crate::ErrorKind::InvalidConfig`] error (setting `tls_identity`).
    #[must_use]
    pub fn tls_identity(mut self, identity: TlsIdentity) -> Self {
        self.tls_identity = Some(identity);
        self
    }

    /// Presents the client certificate (chain) in the PEM file `cert` with the private key
    /// in the PEM file `key` (see [`AmqpConfig::tls_identity`]).
    ///
    /// # Errors
    /// [`crate::ErrorKind::InvalidConfig`] (setting `tls_identity`) when a file cannot be read
    /// or, with the `rustls` feature, rustls refuses the certificate or the key.
    pub fn tls_identity_files(
        mut self,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> crate::Result<Self> {
        let setting = "tls_identity";
        let identity = TlsIdentity::from_pem(
            tls::read_pem(cert.as_ref(), setting, "the client certificate")?,
            tls::read_pem(key.as_ref(), setting, "the client key")?,
        );
        #[cfg(feature = "rustls")]
        tls::check_identity(&identity, self.tls_ca_pem.as_deref(), setting)?;
        self.tls_identity = Some(identity);
        Ok(self)
    }

    /// Checks the TLS settings when an address of the list is `amqps://`: without the
    /// `rustls` feature that is [`crate::ErrorKind::FeatureDisabled`]; with it, bad PEM is
    /// [`crate::ErrorKind::InvalidConfig`].
    pub(crate) fn check_tls(&self) -> crate::Result<()> {
        let Some(addr) = crate::amqp::connection::addresses(&self.addr)
            .into_iter()
            .find(|a| tls::is_tls(a))
        else {
            return Ok(());
        };
        #[cfg(not(feature = "rustls"))]
        return Err(tls::feature_disabled(&crate::amqp::connection::redact(
            addr,
        )));
        #[cfg(feature = "rustls")]
        {
            let _ = addr;
            if let Some(pem) = &self.tls_ca_pem {
                tls::check_ca(pem, "tls_ca_pem")?;
            }
            if let Some(identity) = &self.tls_identity {
                tls::check_identity(identity, self.tls_ca_pem.as_deref(), "tls_identity")?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One rule: an unset or empty `AMQP_ADDR` chooses no broker, here as in `connect`.
    #[test]
    fn no_address_is_an_error() {
        for var in [None, Some(""), Some("  ")] {
            let err = AmqpConfig::from_var(var).unwrap_err();
            assert_eq!(
                err.kind(),
                crate::ErrorKind::InvalidConfig {
                    setting: "AMQP_ADDR"
                }
            );
            assert!(err.to_string().contains(LOCAL_ADDR), "{err}");
        }
        let config = AmqpConfig::from_var(Some(" amqp://h:5672/%2f ")).unwrap();
        assert_eq!(config.addr, "amqp://h:5672/%2f");
        assert_eq!(config.startup_timeout, Duration::ZERO);
    }

    /// A self-signed CA certificate (public; its key was thrown away), valid until 2126.
    const FIXTURE_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBnTCCAUOgAwIBAgIUK64PiuIoyVWw++kYsyQtvjj3l+8wCgYIKoZIzj0EAwIw
GzEZMBcGA1UEAwwQTGVwdXMgZml4dHVyZSBDQTAgFw0yNjEyMDIwMDQ0NTJaGA8y
MTI2MTEwODAwNDQ1MlowGzEZMBcGA1UEAwwQTGVwdXMgZml4dHVyZSBDQTBZMBMG
ByqGSM49AgEGCCqGSM49AwEHA0IABNgcCB+nqPdSb6opnLfRrhqDMAi8LotnAFWB
110gbyFrfoFAp2fomiHQeNZb2A65nKgtvkQXpelfXol9oEoP9f6jYzBhMB0GA1Ud
DgQWBBQz3OERPlbz0xzmuciBqY62RR1DsDAfBgNVHSMEGDAWgBQz3OERPlbz0xzm
uciBqY62RR1DsDAPBgNVHRMBAf8EBTADAQH/MA4GA1UdDwEB/wQEAwICBDAKBggq
hkjOPQQDAgNIADBFAiEAkSYIItiFSTwOS+k+YmkMZOkzJb8suHVZbffKdsVHWUcC
IASIbJ39z/Zj9WGPiiAkdiHuyWEYPEzpelkfVUTq5Qit
-----END CERTIFICATE-----
";

    /// `text` in a new file of the temporary directory; its path.
    fn temp_file(name: &str, text: &str) -> String {
        let path = std::env::temp_dir().join(format!("lepus-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }

    /// The TLS variables: paths to PEM files, read and (with `rustls`) checked at once, each
    /// error naming its variable.
    #[test]
    fn tls_settings_from_the_environment() {
        let plain = AmqpConfig::new("amqps://h/%2f");
        let same = plain.clone().tls_from_vars(None, None, None).unwrap();
        assert_eq!(same, plain);

        let ca = temp_file("ca.pem", FIXTURE_CA);
        let config = plain.clone().tls_from_vars(Some(ca), None, None).unwrap();
        assert_eq!(config.tls_ca_pem.as_deref(), Some(FIXTURE_CA));
        assert!(config.tls_identity.is_none());

        let missing = "/nonexistent/lepus/ca.pem".to_owned();
        let err = plain
            .clone()
            .tls_from_vars(Some(missing.clone()), None, None)
            .unwrap_err();
        assert_eq!(
            err.kind(),
            crate::ErrorKind::InvalidConfig {
                setting: TLS_CA_VAR
            }
        );
        assert!(err.to_string().contains(&missing), "{err}");

        let cert = temp_file("cert.pem", FIXTURE_CA);
        for (cert, key) in [(Some(cert), None), (None, Some(missing))] {
            let err = plain.clone().tls_from_vars(None, cert, key).unwrap_err();
            assert_eq!(
                err.kind(),
                crate::ErrorKind::InvalidConfig {
                    setting: TLS_CERT_VAR
                }
            );
            assert!(err.to_string().contains("both or neither"), "{err}");
        }

        #[cfg(feature = "rustls")]
        {
            let junk = temp_file("junk.pem", "this is no certificate\n");
            let err = plain.tls_from_vars(Some(junk), None, None).unwrap_err();
            assert_eq!(
                err.kind(),
                crate::ErrorKind::InvalidConfig {
                    setting: TLS_CA_VAR
                }
            );
            assert!(err.to_string().contains("no certificate"), "{err}");
        }
    }
}
