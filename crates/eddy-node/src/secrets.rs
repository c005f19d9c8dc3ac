//! Secrets: values the operator's key seals (XChaCha20-Poly1305, a fresh random nonce per
//! value, the secret's name and the time it was set as associated data) before they reach the store, opened by a
//! node only to hand them to a function as environment variables. The key is given to every
//! node (a file or `EDDY_SECRETS_KEY`) and never stored beside the data; neither the store,
//! the API, the CLI nor the node's log ever holds a value in the clear.
//!
//! Rotation without downtime or restart: write the new key into every node's key file. Each
//! node reads it within `SECRETS_KEY_RELOAD_INTERVAL_MS`, seals with it from then on, and
//! keeps the key it replaced in memory to open what that one sealed. Then
//! `POST /v1/secrets/rekey` seals each version again under the new key. (A node restarted
//! before the re-key needs the old key in `secrets_previous_key_files`.)

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use eddy_store::{AccessStore, SealedSecret};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::problem::{Kind, Problem};

/// Shortest key an operator may give (bytes of text): `openssl rand -hex 32` gives 64.
pub const SECRETS_KEY_BYTES_MIN: usize = 32;
/// How often the key file is read to see whether the operator put a new key in it.
pub const SECRETS_KEY_RELOAD_INTERVAL_MS: u64 = 1_000;
/// The environment variable that may hold the key instead of a file.
pub const SECRETS_KEY_ENV: &str = "EDDY_SECRETS_KEY";

const KEY_CONTEXT: &[u8] = b"eddy secrets key v1\0";
const KEY_ID_CONTEXT: &[u8] = b"eddy secrets key id v1\0";
const NONCE_BYTES: usize = 24;

struct Key {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl Key {
    fn new(text: &str, source: &str) -> anyhow::Result<Key> {
        let text = text.trim();
        anyhow::ensure!(
            text.len() >= SECRETS_KEY_BYTES_MIN,
            "the secrets key in {source} is {} bytes; use at least {SECRETS_KEY_BYTES_MIN} (`openssl rand -hex 32`)",
            text.len()
        );
        let derived = Sha256::new()
            .chain_update(KEY_CONTEXT)
            .chain_update(text.as_bytes())
            .finalize();
        let id = Sha256::new()
            .chain_update(KEY_ID_CONTEXT)
            .chain_update(text.as_bytes())
            .finalize();
        Ok(Key {
            id: hex::encode(&id[..8]),
            cipher: XChaCha20Poly1305::new(&derived),
        })
    }

    /// Seals `value` of secret `name` set at `at_ms`: both are bound in as associated data,
    /// so a sealed value moved to another secret, or to another version of its own, does not
    /// open.
    fn seal(&self, name: &str, at_ms: i64, value: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: value,
                    aad: &associated(name, at_ms),
                },
            )
            .expect("sealing cannot fail for values this small");
        (nonce.to_vec(), sealed)
    }

    fn open(&self, secret: &SealedSecret) -> Option<Vec<u8>> {
        if secret.nonce.len() != NONCE_BYTES {
            return None;
        }
        self.cipher
            .decrypt(
                XNonce::from_slice(&secret.nonce),
                Payload {
                    msg: &secret.ciphertext,
                    aad: &associated(&secret.name, secret.created_at_ms),
                },
            )
            .ok()
    }
}

/// The associated data of a sealed value: the secret's name and when the value was set.
fn associated(name: &str, at_ms: i64) -> Vec<u8> {
    let mut data = Vec::with_capacity(name.len() + 9);
    data.extend_from_slice(name.as_bytes());
    data.push(0);
    data.extend_from_slice(&at_ms.to_be_bytes());
    data
}

/// What a re-key did.
pub struct Rekeyed {
    /// Versions sealed again under the current key.
    pub resealed: u64,
    /// Versions the current key sealed already.
    pub current: u64,
}

/// The key that seals and the keys that only open.
struct Keys {
    current: Option<Arc<Key>>,
    previous: Vec<Arc<Key>>,
}

/// The node's keys and the store of sealed secrets.
pub struct Secrets {
    keys: ArcSwap<Keys>,
    /// A new key read once from the file: adopted when the next read finds the same (a
    /// file read while being written is not taken as the key). Also the last unusable
    /// content warned about, so it is warned about once.
    seen: std::sync::Mutex<Option<String>>,
    /// The file the current key comes from, read again for a new key.
    current_file: Option<PathBuf>,
    store: Arc<dyn AccessStore>,
}

impl Secrets {
    /// `current` seals and opens; each of `previous` only opens. Texts as read from their
    /// files (see [`Secrets::read_key`]); `None`: this node handles no secrets.
    pub fn new(
        store: Arc<dyn AccessStore>,
        current: Option<(String, String)>,
        current_file: Option<PathBuf>,
        previous: Vec<(String, String)>,
    ) -> anyhow::Result<Secrets> {
        let current = current
            .map(|(text, source)| Key::new(&text, &source).map(Arc::new))
            .transpose()?;
        let previous = previous
            .iter()
            .map(|(text, source)| Key::new(text, source).map(Arc::new))
            .collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(
            current.is_some() || previous.is_empty(),
            "secrets_previous_key_files needs secrets_key_file (or {SECRETS_KEY_ENV}): the key that seals"
        );
        Ok(Secrets {
            keys: ArcSwap::from_pointee(Keys { current, previous }),
            seen: std::sync::Mutex::new(None),
            current_file,
            store,
        })
    }

    /// Reads the key file; a new key there seals from now on, and the one it replaces
    /// stays to open what it sealed. Whether the key changed.
    pub fn reload(&self) -> bool {
        let Some(file) = &self.current_file else {
            return false;
        };
        let Ok((text, source)) = Secrets::read_key(file) else {
            return false;
        };
        let keys = self.keys.load();
        let key = Key::new(&text, &source);
        if let Ok(key) = &key
            && keys.current.as_ref().is_some_and(|c| c.id == key.id)
        {
            return false;
        }
        let digest = hex::encode(Sha256::digest(text.as_bytes()));
        let stable = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            let stable = seen.as_deref() == Some(digest.as_str());
            *seen = Some(digest);
            stable
        };
        let key = match key {
            Ok(key) if stable => key,
            // Read once: taken when the next read finds the same.
            Ok(_) => return false,
            Err(e) => {
                if !stable {
                    tracing::warn!(error = %format!("{e:#}"), "the secrets key file changed but its key cannot be used; still sealing with the previous key");
                }
                return false;
            }
        };
        let replaced = keys.current.clone();
        let previous = replaced
            .iter()
            .chain(&keys.previous)
            .filter(|k| k.id != key.id)
            .cloned()
            .collect();
        tracing::info!(
            key = %key.id,
            replaced = %replaced.as_ref().map(|k| k.id.as_str()).unwrap_or(""),
            "the secrets key changed: new secrets are sealed with it; run `eddy secret rekey` to seal the others again"
        );
        self.keys.store(Arc::new(Keys {
            current: Some(Arc::new(key)),
            previous,
        }));
        true
    }

    /// Reads the key file every `SECRETS_KEY_RELOAD_INTERVAL_MS` until `shutdown`.
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        if self.current_file.is_none() {
            return;
        }
        let period = Duration::from_millis(SECRETS_KEY_RELOAD_INTERVAL_MS);
        crate::clock::every_on_blocking_pool(period, shutdown, move || {
            self.reload();
        })
        .await
    }

    /// The key text in `path`.
    pub fn read_key(path: &Path) -> anyhow::Result<(String, String)> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the secrets key from {}", path.display()))?;
        Ok((text, path.display().to_string()))
    }

    fn key(&self) -> Result<Arc<Key>, Problem> {
        self.keys.load().current.clone().ok_or_else(|| {
            Problem::new(
                Kind::Conflict,
                "no_secrets_key",
                format!(
                    "this node has no secrets key: start it with secrets_key_file in node.toml, --secrets-key-file or {SECRETS_KEY_ENV} (the same key on every node)"
                ),
            )
        })
    }

    /// Stores `value` as the next version of secret `name`.
    pub async fn set(&self, name: &str, value: &str, at_ms: i64) -> Result<u32, Problem> {
        let key = self.key()?;
        let (nonce, sealed) = key.seal(name, at_ms, value.as_bytes());
        Ok(self
            .store
            .put_secret(name, &key.id, nonce, sealed, at_ms)
            .await?)
    }

    /// The latest version of secret `name`: its number and when it was set.
    pub async fn latest(&self, name: &str) -> Result<(u32, i64), Problem> {
        self.key()?;
        match self.store.secret(name, None).await? {
            Some(secret) => Ok((secret.version, secret.created_at_ms)),
            None => Err(Problem::new(
                Kind::Invalid,
                "no_secret",
                format!("no secret `{name}`; set it first with `eddy secret set {name}`"),
            )),
        }
    }

    /// The value of version `version` of secret `name`, set at `created_at_ms` (`0`: any
    /// time), for a function's environment.
    pub async fn value(
        &self,
        name: &str,
        version: u32,
        created_at_ms: i64,
    ) -> Result<String, Problem> {
        let sealed = self
            .store
            .secret(name, Some(version))
            .await?
            .filter(|s| created_at_ms == 0 || s.created_at_ms == created_at_ms)
            .ok_or_else(|| {
                Problem::new(
                    Kind::Invalid,
                    "no_secret",
                    format!(
                        "version {version} of secret `{name}` is gone (the secret was removed); set it again and deploy"
                    ),
                )
            })?;
        let keys = self.keys.load();
        let opened = keys
            .current
            .iter()
            .chain(&keys.previous)
            .find(|key| key.id == sealed.key_id)
            .and_then(|key| key.open(&sealed));
        let Some(bytes) = opened else {
            return Err(Problem::new(
                Kind::Invalid,
                "secret_unreadable",
                format!(
                    "secret `{name}` version {version} was sealed by key {} which this node does not hold (or it does not open it): give the node that key, in secrets_key_file or secrets_previous_key_files",
                    sealed.key_id
                ),
            ));
        };
        String::from_utf8(bytes)
            .map_err(|_| Problem::internal("a secret opened to bytes that are not UTF-8", name))
    }

    /// Seals every version again under the current key if another key sealed it.
    pub async fn rekey(&self) -> Result<Rekeyed, Problem> {
        let key = self.key()?;
        let mut done = Rekeyed {
            resealed: 0,
            current: 0,
        };
        for sealed in self.store.secrets().await? {
            if sealed.key_id == key.id {
                done.current += 1;
                continue;
            }
            let value = self.value(&sealed.name, sealed.version, 0).await?;
            let (nonce, ciphertext) =
                key.seal(&sealed.name, sealed.created_at_ms, value.as_bytes());
            if self
                .store
                .reseal_secret(
                    &sealed.name,
                    sealed.version,
                    &sealed.key_id,
                    &key.id,
                    nonce,
                    ciphertext,
                )
                .await?
            {
                done.resealed += 1;
            }
        }
        Ok(done)
    }

    /// The id of the key that seals (never the key).
    pub fn key_id(&self) -> Option<String> {
        self.keys.load().current.as_ref().map(|k| k.id.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(key: &Key, name: &str, value: &[u8]) -> SealedSecret {
        let (nonce, ciphertext) = key.seal(name, 1_000, value);
        SealedSecret {
            name: name.to_owned(),
            version: 1,
            key_id: key.id.clone(),
            nonce,
            ciphertext,
            created_at_ms: 1_000,
        }
    }

    #[test]
    fn a_short_key_is_refused_naming_the_minimum() {
        let e = Key::new("short", "the file").err().unwrap().to_string();
        assert!(e.contains("at least 32"), "{e}");
        assert!(Key::new(&"k".repeat(32), "the file").is_ok());
    }

    #[test]
    fn a_sealed_value_opens_only_under_its_key_and_its_name() {
        let key = Key::new(&"a".repeat(64), "a").unwrap();
        let other = Key::new(&"b".repeat(64), "b").unwrap();
        assert_ne!(key.id, other.id);
        let secret = sealed(&key, "stripe", b"sk_live_1");
        assert!(!secret.ciphertext.windows(9).any(|w| w == b"sk_live_1"));
        assert_eq!(key.open(&secret).as_deref(), Some(&b"sk_live_1"[..]));
        assert_eq!(other.open(&secret), None);
        // Moved to another secret's name, it does not open: the name is bound in.
        let moved = SealedSecret {
            name: "db".into(),
            ..secret.clone()
        };
        assert_eq!(key.open(&moved), None);
        // Moved to another version of its own secret (another time), neither.
        let other_version = SealedSecret {
            version: 2,
            created_at_ms: 2_000,
            ..secret.clone()
        };
        assert_eq!(key.open(&other_version), None);
        // Each sealing takes a fresh nonce.
        assert_ne!(sealed(&key, "stripe", b"sk_live_1").nonce, secret.nonce);
    }
}
