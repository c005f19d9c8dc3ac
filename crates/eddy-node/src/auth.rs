//! The admin token: created on first start, only its hash stored, the plain token written
//! to `<state-dir>/admin-token` with mode 0600; or given by the operator in a file.
//!
//! On one node, deleting the file and restarting the node rotates the token. In a cluster
//! the token is the cluster's: the first node creates it once, the others accept it, and
//! no node rotates it by starting.

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

/// Where the admin token comes from.
pub struct TokenSource<'a> {
    /// A file holding the token the operator gives: accepted as is, nothing written.
    pub given: Option<&'a Path>,
    /// Whether the store is shared by a cluster: then the token is the cluster's, created
    /// once by the first node and never rotated by a node starting.
    pub shared: bool,
}

/// The admin token's hash: the operator's token if one is given; else the stored one,
/// creating the token (and its file) when there is none. On one node (SQLite), a missing
/// token file also makes a new token: deleting it and restarting rotates the token.
pub async fn admin_token(
    store: &dyn TokenStore,
    state_dir: &Path,
    source: TokenSource<'_>,
) -> anyhow::Result<TokenHash> {
    use anyhow::Context;
    if let Some(given) = source.given {
        let token = std::fs::read_to_string(given)
            .with_context(|| format!("reading the admin token from {}", given.display()))?;
        let token = token.trim();
        anyhow::ensure!(
            token.len() >= GIVEN_TOKEN_BYTES_MIN,
            "the admin token in {} is {} bytes; use at least {GIVEN_TOKEN_BYTES_MIN}",
            given.display(),
            token.len()
        );
        return Ok(TokenHash(hash(token)));
    }
    let path = state_dir.join(TOKEN_FILE);
    let stored = store
        .admin_token_hash()
        .await
        .context("reading the admin token hash")?;
    match stored {
        Some(stored) if source.shared || path.exists() => return Ok(TokenHash(stored)),
        _ => {}
    }
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let token = format!("eddy_{}", hex::encode(raw));
    let hashed = hash(&token);
    if source.shared {
        // The first node of the cluster stores its token; the others take that one. The
        // file is written before the hash is stored (a token whose hash is stored but that
        // nobody holds would lock everyone out) and kept only by the node whose token won.
        let pending = path.with_extension("pending");
        write_private(&pending, &token)
            .with_context(|| format!("writing the admin token to {}", pending.display()))?;
        let stored = store.init_admin_token_hash(&hashed).await;
        let stored = match stored {
            Ok(stored) => stored,
            Err(e) => {
                let _ = std::fs::remove_file(&pending);
                return Err(e).context("storing the admin token hash");
            }
        };
        if !stored {
            let _ = std::fs::remove_file(&pending);
            let theirs = store
                .admin_token_hash()
                .await
                .context("reading the admin token hash")?
                .context("the admin token hash vanished from the store")?;
            return Ok(TokenHash(theirs));
        }
        std::fs::rename(&pending, &path)
            .with_context(|| format!("moving the admin token into {}", path.display()))?;
        tracing::info!(path = %path.display(), "created the cluster's admin token");
        return Ok(TokenHash(hashed));
    }
    write_private(&path, &token)
        .with_context(|| format!("writing the admin token to {}", path.display()))?;
    store
        .set_admin_token_hash(&hashed)
        .await
        .context("storing the admin token hash")?;
    tracing::info!(path = %path.display(), "created a new admin token");
    Ok(TokenHash(hashed))
}

/// Shortest admin token an operator may give (bytes): about 128 bits of hex.
pub const GIVEN_TOKEN_BYTES_MIN: usize = 32;

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
