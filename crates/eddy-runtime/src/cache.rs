//! The on-disk cache of compiled components, keyed by content hash and engine settings.
//!
//! A cache entry is `Component::serialize` output in `<cache-dir>/<sha256>-<engine>.cwasm`,
//! where `<engine>` hashes Wasmtime's version and every setting that affects compiled code,
//! so an upgrade or a config change never loads stale code. Entries are written to a
//! temporary file and renamed, so a crash never leaves a half-written entry.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::Engine;
use wasmtime::component::Component;

/// Compile-cache counters since the runtime started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Components loaded from compiled code on disk.
    pub hits: u64,
    /// Components compiled with Cranelift.
    pub misses: u64,
}

pub(crate) struct CompileCache {
    dir: PathBuf,
    engine_key: String,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl CompileCache {
    pub(crate) fn open(dir: &Path, engine: &Engine) -> io::Result<CompileCache> {
        std::fs::create_dir_all(dir)?;
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(CompileCache {
            dir: dir.to_path_buf(),
            engine_key: format!("{:016x}", hasher.finish()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// Load the compiled component for `digest`, or compile `bytes` and store the result.
    /// Returns whether it was compiled.
    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        digest: &str,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, bool)> {
        let path = self.entry_path(digest);
        if path.exists() {
            // SAFETY: entries in the cache directory are written only by this cache, from
            // `Component::serialize` of an engine with the same compatibility hash (it is
            // part of the file name). Wasmtime re-checks the header and engine settings.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok((component, false));
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "discarding unusable compile-cache entry");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let component = Component::new(engine, bytes)?;
        self.misses.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.store(&path, &component) {
            tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "cannot write compile-cache entry; continuing without it");
        }
        Ok((component, true))
    }

    fn entry_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir.join(format!("{hex}-{}.cwasm", self.engine_key))
    }

    fn store(&self, path: &Path, component: &Component) -> wasmtime::Result<()> {
        let serialized = component.serialize()?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, serialized)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}
