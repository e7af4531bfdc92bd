//! fab's own HTTPS: the certificate and key named by `TLS_CERT_FILE`/`TLS_KEY_FILE` (or `fab
//! serve --tls-cert/--tls-key`), the rustls server configuration built on them, and replacing the
//! pair without a restart.
//!
//! Threat: a listener that still speaks TLS 1.0/1.1 (downgrade to CBC suites and SHA-1
//! handshakes), a certificate that cannot be renewed without dropping every connection, and a
//! renewal that goes wrong (a half-written file, a key that belongs to another certificate) and
//! takes the site down with it.
//!
//! Rule:
//! - TLS 1.2 and 1.3 only, with the aws-lc-rs provider's suites (AEAD and forward-secret key
//!   exchange only); ALPN offers `h2`, then `http/1.1`. No client certificates.
//! - At start the pair must load: a file that cannot be read, holds no PEM certificate or key, or
//!   whose key does not belong to the certificate refuses the start with an error naming the
//!   setting, the file and the reason.
//! - Afterwards [`watch`] looks at both files every [`POLL_INTERVAL`] (modification time, size
//!   and inode, so an in-place write and a rename over the file are both noticed) and re-reads
//!   them on SIGHUP whatever they look like. A new pair replaces the old one only when it loads
//!   completely; otherwise the old pair keeps serving and the problem is logged as an error,
//!   once per change of the files. New handshakes get the new certificate; connections already
//!   open keep the one they negotiated.
//!
//! # Deployment caveat
//! A copy that keeps the old file's modification time and size (`cp -p` of an equally long
//! certificate) is not noticed by the poll: send SIGHUP after such a copy. Renew by writing the
//! key first and the certificate last, or send SIGHUP once both are in place; a poll that sees a
//! new certificate with the old key logs a mismatch and retries when the key changes.

use fab_core::config::TlsSettings;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, ServerConfig};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

/// How often [`watch`] looks at the certificate and key files.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// ALPN protocols offered, most preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why a certificate or key could not be used. Displays as `SETTING FILE: reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting} {path}: {reason}")]
pub struct TlsError {
    /// `TLS_CERT_FILE` or `TLS_KEY_FILE`: the setting naming the file at fault.
    pub setting: &'static str,
    /// The file.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

impl TlsError {
    fn cert(path: &Path, reason: impl Into<String>) -> Self {
        Self {
            setting: "TLS_CERT_FILE",
            path: path.display().to_string(),
            reason: reason.into(),
        }
    }

    fn key(path: &Path, reason: impl Into<String>) -> Self {
        Self {
            setting: "TLS_KEY_FILE",
            path: path.display().to_string(),
            reason: reason.into(),
        }
    }
}

/// What a file looked like when last read: enough to notice a write or a replacement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl FileStamp {
    /// None when the file cannot be examined (e.g. mid-replacement); that is a state too, so a
    /// missing file is reported once, not at every poll.
    fn of(path: &Path) -> Option<Self> {
        let metadata = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
        #[cfg(not(unix))]
        let inode = 0;
        Some(Self {
            modified: metadata.modified().ok(),
            len: metadata.len(),
            inode,
        })
    }
}

type PairStamp = (Option<FileStamp>, Option<FileStamp>);

/// The certificate fab presents, swapped atomically when the files change. It is the rustls
/// certificate resolver, so every new handshake reads the current pair.
#[derive(Debug)]
pub struct CertificateStore {
    settings: TlsSettings,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' stamps at the last attempt to load them, successful or not.
    seen: Mutex<PairStamp>,
}

impl CertificateStore {
    /// Loads the pair `settings` names; an error names the file and why it is unusable.
    pub fn load(settings: &TlsSettings) -> Result<Arc<Self>, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let seen = stamps(settings);
        let key = load_pair(settings, &provider)?;
        Ok(Arc::new(Self {
            settings: settings.clone(),
            provider,
            current: RwLock::new(Arc::new(key)),
            seen: Mutex::new(seen),
        }))
    }

    /// The files this store reads.
    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    /// The pair new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Re-reads both files now. On success new handshakes use the new pair; on failure the
    /// previous pair stays and the error says why.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamp = stamps(&self.settings);
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) = stamp;
        let key = load_pair(&self.settings, &self.provider)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
        Ok(())
    }

    /// Re-reads the files if they changed since the last attempt; None when they did not.
    pub fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        let stamp = stamps(&self.settings);
        if *self.seen.lock().unwrap_or_else(PoisonError::into_inner) == stamp {
            return None;
        }
        Some(self.reload())
    }

    /// The rustls configuration for fab's listener: TLS 1.3 and 1.2, ALPN h2 and http/1.1, and
    /// this store as the certificate resolver.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::cert(&self.settings.cert_file, e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        // Session resumption stays on (rustls' defaults: a bounded in-memory cache and rotating
        // ticket keys); it only saves handshakes, the certificate is checked on the first one.
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for CertificateStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn stamps(settings: &TlsSettings) -> PairStamp {
    (
        FileStamp::of(&settings.cert_file),
        FileStamp::of(&settings.key_file),
    )
}

/// Reads, parses and checks one certificate chain and key.
fn load_pair(settings: &TlsSettings, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let cert_path = &settings.cert_file;
    let key_path = &settings.key_file;
    let cert_pem = std::fs::read(cert_path)
        .map_err(|e| TlsError::cert(cert_path, format!("cannot read the certificate: {e}")))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::cert(cert_path, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(TlsError::cert(
            cert_path,
            "no PEM CERTIFICATE block found (expected the certificate chain, leaf first)",
        ));
    }
    let key_pem = std::fs::read(key_path)
        .map_err(|e| TlsError::key(key_path, format!("cannot read the private key: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        TlsError::key(
            key_path,
            format!(
                "no usable PEM private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY): {e}"
            ),
        )
    })?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::key(key_path, format!("the private key is not usable: {e}")))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // A key type whose public half rustls cannot compute cannot be checked: accept it, as
        // rustls does, rather than refuse a working pair.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => Err(TlsError::key(
            key_path,
            format!(
                "the private key does not belong to the certificate in {}",
                cert_path.display()
            ),
        )),
        Err(other) => Err(TlsError::cert(
            cert_path,
            format!("the first certificate is not a valid X.509 certificate: {other}"),
        )),
    }
}

/// Keeps `store` current: polls the files every [`POLL_INTERVAL`] and re-reads them on SIGHUP.
/// Runs until dropped; errors are logged and the previous pair keeps serving.
///
/// The SIGHUP handler is installed by this call, before the returned future first runs, so a
/// SIGHUP sent once the server says it listens reloads instead of ending the process.
pub fn watch(store: Arc<CertificateStore>) -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    async move {
        #[cfg(unix)]
        let mut hangups = match hangups {
            Ok(stream) => Some(stream),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP; certificate files are still polled");
                None
            }
        };
        let mut ticks = tokio::time::interval(POLL_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hangups.as_mut() {
                    Some(stream) => stream.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<Option<()>>();
            let outcome = tokio::select! {
                _ = ticks.tick() => store.reload_if_changed().map(|r| (r, "the files changed")),
                Some(()) = hangup => Some((store.reload(), "SIGHUP")),
            };
            match outcome {
                None => {}
                Some((Ok(()), why)) => tracing::info!(
                    cert = %store.settings.cert_file.display(),
                    "TLS certificate reloaded ({why})"
                ),
                Some((Err(error), why)) => tracing::error!(
                    %error,
                    "TLS certificate not reloaded ({why}); the previous certificate stays in use"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (String, String) {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        (generated.cert.pem(), generated.signing_key.serialize_pem())
    }

    fn write(dir: &Path, cert: &str, key: &str) -> TlsSettings {
        let settings = TlsSettings {
            cert_file: dir.join("cert.pem"),
            key_file: dir.join("key.pem"),
        };
        std::fs::write(&settings.cert_file, cert).unwrap();
        std::fs::write(&settings.key_file, key).unwrap();
        settings
    }

    fn error_of(settings: &TlsSettings) -> TlsError {
        CertificateStore::load(settings).unwrap_err()
    }

    #[test]
    fn a_matching_pair_loads_and_builds_a_tls12_and_tls13_config() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair();
        let store = CertificateStore::load(&write(dir.path(), &cert, &key)).unwrap();
        let config = store.server_config().unwrap();
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn a_missing_certificate_is_named_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let (_, key) = pair();
        let mut settings = write(dir.path(), "", &key);
        settings.cert_file = dir.path().join("absent.pem");
        let error = error_of(&settings);
        assert_eq!(error.setting, "TLS_CERT_FILE");
        assert!(error.to_string().contains("absent.pem"), "{error}");
        assert!(
            error.reason.contains("cannot read the certificate"),
            "{error}"
        );
    }

    #[test]
    fn a_file_without_a_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_, key) = pair();
        let error = error_of(&write(dir.path(), "not a certificate\n", &key));
        assert_eq!(error.setting, "TLS_CERT_FILE");
        assert!(error.reason.contains("no PEM CERTIFICATE"), "{error}");
    }

    #[test]
    fn a_garbled_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_, key) = pair();
        let garbled = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let error = error_of(&write(dir.path(), garbled, &key));
        assert_eq!(error.setting, "TLS_CERT_FILE", "{error}");
    }

    #[test]
    fn a_key_file_without_a_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = pair();
        let error = error_of(&write(dir.path(), &cert, &cert));
        assert_eq!(error.setting, "TLS_KEY_FILE");
        assert!(
            error.reason.contains("no usable PEM private key"),
            "{error}"
        );
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = pair();
        let (_, other_key) = pair();
        let error = error_of(&write(dir.path(), &cert, &other_key));
        assert_eq!(error.setting, "TLS_KEY_FILE");
        assert!(error.reason.contains("does not belong"), "{error}");
    }

    #[test]
    fn a_bad_replacement_keeps_the_previous_pair_and_a_good_one_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair();
        let settings = write(dir.path(), &cert, &key);
        let store = CertificateStore::load(&settings).unwrap();
        let first = store.current().cert[0].clone();
        assert!(store.reload_if_changed().is_none(), "nothing changed yet");

        std::fs::write(&settings.cert_file, "garbage").unwrap();
        assert!(store.reload_if_changed().unwrap().is_err());
        assert_eq!(store.current().cert[0], first, "the old pair keeps serving");
        assert!(
            store.reload_if_changed().is_none(),
            "a broken file is reported once, not at every poll"
        );

        let (cert, key) = pair();
        write(dir.path(), &cert, &key);
        store.reload_if_changed().unwrap().unwrap();
        assert_ne!(store.current().cert[0], first);
    }
}
