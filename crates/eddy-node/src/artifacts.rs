//! Compiled code shared by the nodes of a cluster: a node that compiles a component stores
//! the artifact in the shared store with an HMAC-SHA256 under the cluster's artifact key (a
//! file every node is given, never in the database); a node of the same CPU class (the
//! runtime's engine key) fetches it, checks the MAC and loads it instead of compiling. An
//! artifact that does not verify is never loaded: the node compiles and stores its own.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use eddy_runtime::Runtime;
use eddy_store::ArtifactStore;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Shortest artifact key (bytes): about 128 bits of hex.
pub const ARTIFACT_KEY_BYTES_MIN: usize = 32;

/// What the MAC covers besides the artifact, so a MAC made for one component or engine
/// does not vouch for another, nor for anything else signed with the key.
const MAC_CONTEXT: &[u8] = b"eddy compiled artifact v1";

/// The shared artifacts of one node.
pub struct SharedArtifacts {
    store: Arc<dyn ArtifactStore>,
    key: Vec<u8>,
    runtime: Arc<Runtime>,
}

impl SharedArtifacts {
    pub fn new(store: Arc<dyn ArtifactStore>, key: Vec<u8>, runtime: Arc<Runtime>) -> Self {
        SharedArtifacts {
            store,
            key,
            runtime,
        }
    }

    /// Reads the artifact key from `path` (surrounding whitespace ignored).
    pub fn read_key(path: &Path) -> anyhow::Result<Vec<u8>> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the artifact key from {}", path.display()))?;
        let key = text.trim().as_bytes().to_vec();
        anyhow::ensure!(
            key.len() >= ARTIFACT_KEY_BYTES_MIN,
            "the artifact key in {} is {} bytes; use at least {ARTIFACT_KEY_BYTES_MIN}",
            path.display(),
            key.len()
        );
        Ok(key)
    }

    fn mac(&self, digest: &str, engine: &str) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        for part in [MAC_CONTEXT, digest.as_bytes(), engine.as_bytes()] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }

    /// Before preparing `digest`: unless the compile cache has it, fetches the cluster's
    /// artifact for this node's engine and, if its MAC verifies, puts it in the cache.
    /// Whether it did; every failure is logged and means compiling.
    pub async fn fetch(&self, digest: &str) -> bool {
        if self.runtime.is_cached(digest) {
            return false;
        }
        let engine = self.runtime.engine_key();
        let (artifact, tag) = match self.store.artifact(digest, engine).await {
            Ok(Some(found)) => found,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(%digest, error = %e, "cannot read the cluster's compiled artifact; compiling");
                return false;
            }
        };
        let mut mac = self.mac(digest, engine);
        mac.update(&artifact);
        if mac.verify_slice(&tag).is_err() {
            tracing::warn!(%digest, engine, "the cluster's compiled artifact does not verify under this node's artifact key; compiling instead (is artifact_key_file the same on every node?)");
            return false;
        }
        let runtime = self.runtime.clone();
        let owned = digest.to_owned();
        match tokio::task::spawn_blocking(move || runtime.install_artifact(&owned, &artifact)).await
        {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(%digest, error = %e, "cannot keep the cluster's compiled artifact; compiling");
                false
            }
            Err(e) => {
                tracing::warn!(%digest, error = %e, "keeping the cluster's compiled artifact failed; compiling");
                false
            }
        }
    }

    /// After this node compiled `digest`: stores the artifact with its MAC for the other
    /// nodes of its CPU class. Failures are logged (the others compile then).
    pub async fn share(&self, digest: &str) {
        let runtime = self.runtime.clone();
        let owned = digest.to_owned();
        let artifact =
            match tokio::task::spawn_blocking(move || runtime.cached_artifact(&owned)).await {
                Ok(Some(artifact)) => artifact,
                Ok(None) | Err(_) => return,
            };
        let engine = self.runtime.engine_key();
        let mut mac = self.mac(digest, engine);
        mac.update(&artifact);
        let tag = mac.finalize().into_bytes().to_vec();
        let bytes = artifact.len();
        match self.store.put_artifact(digest, engine, artifact, tag).await {
            Ok(()) => {
                tracing::info!(%digest, engine, bytes, "shared the compiled artifact with the cluster")
            }
            Err(e) => {
                tracing::warn!(%digest, error = %e, "cannot share the compiled artifact; other nodes will compile it")
            }
        }
    }
}
