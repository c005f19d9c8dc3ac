//! The admin token: created on first start, only its hash stored, the plain token written
//! to `<state-dir>/admin-token` with mode 0600.
//!
//! Deleting the file and restarting the node rotates the token.

use std::path::Path;

use eddy_store::TokenStore;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// File name of the plain token inside the state directory.
pub const TOKEN_FILE: &str = "admin-token";

/// The SHA-256 of the admin token, compared in constant time.
pub struct TokenHash(String);

impl TokenHash {
    /// Whether `token` is the admin token.
    pub fn matches(&self, token: &str) -> bool {
        let presented = hash(token);
        presented.len() == self.0.len()
            && presented
                .bytes()
                .zip(self.0.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// Load the token hash, creating the token (and its file) when the file is missing.
pub async fn ensure_admin_token(
    store: &dyn TokenStore,
    state_dir: &Path,
) -> anyhow::Result<TokenHash> {
    use anyhow::Context;
    let path = state_dir.join(TOKEN_FILE);
    let stored = store
        .admin_token_hash()
        .await
        .context("reading the admin token hash")?;
    if let (Some(stored), true) = (stored, path.exists()) {
        return Ok(TokenHash(stored));
    }
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let token = format!("eddy_{}", hex::encode(raw));
    write_private(&path, &token)
        .with_context(|| format!("writing the admin token to {}", path.display()))?;
    let hashed = hash(&token);
    store
        .set_admin_token_hash(&hashed)
        .await
        .context("storing the admin token hash")?;
    tracing::info!(path = %path.display(), "created a new admin token");
    Ok(TokenHash(hashed))
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Write the token through a new temporary file, mode 0600 from its creation and never
/// through a symlink, then rename it into place.
fn write_private(path: &Path, token: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    eddy_runtime::write_new_private(&tmp, format!("{token}\n").as_bytes())?;
    std::fs::rename(&tmp, path)
}
