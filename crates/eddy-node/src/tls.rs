//! TLS on both listeners (rustls): the certificate chain and key from PEM files, checked
//! for changes every `TLS_RELOAD_INTERVAL_MS` and swapped in without a restart (a handshake
//! already made keeps its certificate; the next one gets the new). A pair that does not load
//! (half written, a key that does not match) is logged and the one serving is kept.
//!
//! ALPN offers `h2` and `http/1.1` on the public listener, `http/1.1` on the control API.
//! For a first try, a self-signed certificate for the listen addresses and `localhost` is
//! made once in the state directory; its SHA-256 fingerprint is logged so clients can pin
//! or trust it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

/// How often the certificate and key files are read to see whether they changed.
pub const TLS_RELOAD_INTERVAL_MS: u64 = 1_000;
/// Directory of the self-signed certificate inside the state directory.
pub const SELF_SIGNED_DIR: &str = "tls";

/// The certificate the node serves now, swapped when its files change.
pub struct Certificates {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: ArcSwap<CertifiedKey>,
    /// Digest of the files' contents when last loaded (or tried).
    seen: std::sync::Mutex<[u8; 32]>,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates")
            .field("cert_file", &self.cert_file)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn contents_digest(cert: &[u8], key: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update((cert.len() as u64).to_be_bytes())
        .chain_update(cert)
        .chain_update(key)
        .finalize()
        .into()
}

fn load(
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .context("the certificate file is not PEM")?;
    anyhow::ensure!(
        !chain.is_empty(),
        "the certificate file holds no certificate"
    );
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).context("the key file holds no PEM private key")?;
    let certified = CertifiedKey::from_der(chain, key, provider)
        .context("the key does not match the certificate, or is of a kind rustls cannot use")?;
    Ok(certified)
}

/// `SHA256:` and the hex digest of a certificate's DER, colon-separated, as `openssl x509
/// -fingerprint -sha256` prints it.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = Sha256::digest(cert.as_ref());
    let hex: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    format!("SHA256:{}", hex.join(":"))
}

impl Certificates {
    /// Loads the pair; an error names the file at fault.
    pub fn open(cert_file: &Path, key_file: &Path) -> anyhow::Result<Arc<Certificates>> {
        let provider = provider();
        let cert = std::fs::read(cert_file)
            .with_context(|| format!("reading the TLS certificate {}", cert_file.display()))?;
        let key = std::fs::read(key_file)
            .with_context(|| format!("reading the TLS key {}", key_file.display()))?;
        let certified = load(&cert, &key, &provider).with_context(|| {
            format!(
                "loading the TLS certificate {} and key {}",
                cert_file.display(),
                key_file.display()
            )
        })?;
        Ok(Arc::new(Certificates {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            current: ArcSwap::from_pointee(certified),
            seen: std::sync::Mutex::new(contents_digest(&cert, &key)),
            provider,
        }))
    }

    /// The fingerprint of the certificate served now.
    pub fn fingerprint(&self) -> String {
        self.current
            .load()
            .cert
            .first()
            .map(fingerprint)
            .unwrap_or_default()
    }

    /// Reads the files; if they changed since last time and load, serves them. Whether it
    /// swapped.
    pub fn reload(&self) -> bool {
        let (Ok(cert), Ok(key)) = (
            std::fs::read(&self.cert_file),
            std::fs::read(&self.key_file),
        ) else {
            return false;
        };
        let digest = contents_digest(&cert, &key);
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == digest {
                return false;
            }
            *seen = digest;
        }
        match load(&cert, &key, &self.provider) {
            Ok(certified) => {
                self.current.store(Arc::new(certified));
                tracing::info!(
                    cert = %self.cert_file.display(),
                    fingerprint = %self.fingerprint(),
                    "reloaded the TLS certificate"
                );
                true
            }
            Err(e) => {
                tracing::warn!(
                    cert = %self.cert_file.display(),
                    key = %self.key_file.display(),
                    error = %format!("{e:#}"),
                    "the TLS certificate files changed but do not load; still serving the previous certificate"
                );
                false
            }
        }
    }

    /// Checks the files every `TLS_RELOAD_INTERVAL_MS` until `shutdown`.
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        let period = Duration::from_millis(TLS_RELOAD_INTERVAL_MS);
        crate::clock::every_on_blocking_pool(period, shutdown, move || {
            self.reload();
        })
        .await
    }

    /// A rustls server config serving these certificates with `alpn` offered.
    pub fn server_config(self: &Arc<Self>, alpn: &[&[u8]]) -> Arc<ServerConfig> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

/// The self-signed certificate and key in `<state_dir>/tls/`, made for `names` (host names
/// and addresses) if there is none yet, or made again if it was made for other names (the
/// node listens elsewhere now). Returns the files.
pub fn self_signed(state_dir: &Path, names: &[String]) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = state_dir.join(SELF_SIGNED_DIR);
    let cert_file = dir.join("self-signed.crt");
    let key_file = dir.join("self-signed.key");
    let names_file = dir.join("self-signed.names");
    let wanted = names.join("\n");
    if cert_file.is_file() && key_file.is_file() {
        match std::fs::read_to_string(&names_file) {
            Ok(made_for) if made_for == wanted => return Ok((cert_file, key_file)),
            _ => {
                tracing::info!(names = %names.join(", "), "making the self-signed certificate again for the node's names")
            }
        }
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // A key left without its certificate by an interrupted first start is made again.
    let _ = std::fs::remove_file(&key_file);
    let certified = rcgen::generate_simple_self_signed(names.to_vec())
        .context("making a self-signed certificate")?;
    eddy_runtime::write_new_private(&key_file, certified.key_pair.serialize_pem().as_bytes())
        .with_context(|| format!("writing {}", key_file.display()))?;
    std::fs::write(&cert_file, certified.cert.pem())
        .with_context(|| format!("writing {}", cert_file.display()))?;
    std::fs::write(&names_file, &wanted)
        .with_context(|| format!("writing {}", names_file.display()))?;
    Ok((cert_file, key_file))
}
