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
    /// Functions whose machine code came from the incremental cache instead of Cranelift.
    pub incremental_hits: u64,
    /// Functions compiled and stored in the incremental cache.
    pub incremental_inserts: u64,
    /// Bytes the incremental cache holds on disk.
    pub incremental_bytes: u64,
}

pub(crate) struct CompileCache {
    dir: PathBuf,
    engine_key: String,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Permission bits of every directory eddy keeps state or compiled code in: the owner only.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Permission bits of every file in them.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Create `dir` (and missing parents) readable by this user only, or check an existing one:
/// it must belong to this user and be writable by nobody else (anyone who can write there
/// can plant a symlink or a compiled artifact that eddy would load as native code). An
/// existing directory that others may read or enter (eddy before 0700, or a hand-made one) is
/// tightened to 0700; returns whether it was.
pub fn ensure_private_dir(dir: &Path) -> io::Result<bool> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::metadata(dir)?;
    let refuse = |why: String| Err(io::Error::new(io::ErrorKind::PermissionDenied, why));
    if !meta.is_dir() {
        return refuse(format!("{} is not a directory", dir.display()));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return refuse(format!(
            "{} belongs to user {}, not to this process's user {me}: eddy keeps secrets and native code there; use a directory of your own",
            dir.display(),
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o022 != 0 {
        return refuse(format!(
            "{} is writable by its group or by others (mode {mode:o}): anyone who can write there could plant code eddy would run; `chmod 700 {}`",
            dir.display(),
            dir.display()
        ));
    }
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(PRIVATE_DIR_MODE))?;
        return Ok(true);
    }
    Ok(false)
}

/// Whether the compiled artifact at `path` may be loaded as native code: a regular file
/// (not a symlink) of this user's that nobody else may write.
fn trusted_artifact(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if !meta.is_file() || meta.uid() != me || meta.mode() & 0o022 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a regular file of this user's that only it can write",
                path.display()
            ),
        ));
    }
    Ok(())
}

impl CompileCache {
    pub(crate) fn open(dir: &Path, engine: &Engine) -> io::Result<CompileCache> {
        if ensure_private_dir(dir)? {
            tracing::warn!(dir = %dir.display(), "the compile cache directory was readable by others; it is now 0700");
        }
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
            ..CacheStats::default()
        }
    }

    /// The compiled component for `digest`, if the cache holds a usable one. An entry that
    /// is not ours to trust or that Wasmtime refuses is removed (compiling again costs only
    /// time).
    pub(crate) fn load(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.entry_path(digest);
        if !path.exists() {
            return None;
        }
        if let Err(e) = trusted_artifact(&path) {
            // Never load it as code.
            tracing::warn!(error = %e, "ignoring an untrusted compile-cache entry");
            let _ = std::fs::remove_file(&path);
            return None;
        }
        // SAFETY: entries in the cache directory are written only by this cache, from
        // `Component::serialize` of an engine with the same compatibility hash (it is part
        // of the file name), in this process or in its compile worker. Wasmtime re-checks
        // the header and engine settings.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(component)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "discarding unusable compile-cache entry");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Keep a component compiled in this process.
    pub(crate) fn store_component(&self, digest: &str, component: &Component) {
        self.misses.fetch_add(1, Ordering::Relaxed);
        let path = self.entry_path(digest);
        let stored = component
            .serialize()
            .and_then(|bytes| Ok(write_atomically(&path, &bytes, Sync::Durable)?));
        if let Err(e) = stored {
            tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "cannot write compile-cache entry; continuing without it");
        }
    }

    /// Keep the serialized component a compile worker produced and load it: from the cache
    /// file (mapped, not copied) when it could be written, else from `artifact`.
    pub(crate) fn store_artifact(
        &self,
        engine: &Engine,
        digest: &str,
        artifact: &[u8],
    ) -> wasmtime::Result<Component> {
        self.misses.fetch_add(1, Ordering::Relaxed);
        let path = self.entry_path(digest);
        match write_atomically(&path, artifact, Sync::Durable) {
            // SAFETY: the file was written just above, 0600 in our private directory, from
            // the output of our own compile worker (this executable) serializing with the
            // same code settings; Wasmtime re-checks the header and engine settings.
            Ok(()) => unsafe { Component::deserialize_file(engine, &path) },
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot write compile-cache entry; continuing without it");
                // SAFETY: as above, without the file.
                unsafe { Component::deserialize(engine, artifact) }
            }
        }
    }

    /// The engine's compatibility key: artifacts are interchangeable between runtimes with
    /// the same key (the same Wasmtime, settings and CPU features).
    pub(crate) fn engine_key(&self) -> &str {
        &self.engine_key
    }

    /// Whether an entry for `digest` exists (not whether it loads).
    pub(crate) fn has(&self, digest: &str) -> bool {
        self.entry_path(digest).is_file()
    }

    /// The bytes of the entry for `digest`, if there is one this cache would trust.
    pub(crate) fn read(&self, digest: &str) -> Option<Vec<u8>> {
        let path = self.entry_path(digest);
        trusted_artifact(&path).ok()?;
        std::fs::read(path).ok()
    }

    /// Keeps `artifact` as the entry for `digest`, for the next load. The caller vouches for
    /// it (it authenticated it); Wasmtime still checks its header and settings at load.
    pub(crate) fn install(&self, digest: &str, artifact: &[u8]) -> io::Result<()> {
        write_atomically(&self.entry_path(digest), artifact, Sync::Durable)
    }

    fn entry_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir.join(format!("{hex}-{}.cwasm", self.engine_key))
    }
}

/// Writes `bytes` to a temporary file beside `path` and renames it into place, so a reader
/// or a crash never sees half a file. The temporary name is unique per write: Cranelift
/// compiles on several threads, and two of them may store the same key at once.
fn write_atomically(path: &Path, bytes: &[u8], sync: Sync) -> io::Result<()> {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let tmp = path.with_extension(format!(
        "tmp{}-{}",
        std::process::id(),
        WRITES.fetch_add(1, Ordering::Relaxed)
    ));
    let written = write_new(&tmp, bytes, sync).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Write `bytes` to a new file at `path`, mode 0600. Fails if anything (a planted symlink
/// included) is already there.
pub fn write_new_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_new(path, bytes, Sync::Durable)
}

/// Whether a write waits for the disk.
#[derive(Clone, Copy, PartialEq)]
enum Sync {
    /// `fsync` before returning.
    Durable,
    /// Left to the kernel: for entries that prove themselves whole when read.
    Unsynced,
}

fn write_new(path: &Path, bytes: &[u8], sync: Sync) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    file.write_all(bytes)?;
    if sync == Sync::Durable {
        file.sync_all()?;
    }
    Ok(())
}

/// Cranelift's incremental compilation cache, on disk: the machine code of single functions,
/// keyed by what went into compiling them. A component that differs from one compiled before
/// only in part (a Python or JavaScript function: the same interpreter, another app) reuses
/// the machine code of every function that did not change, across deploys, functions and
/// restarts.
///
/// One file per entry, `<dir>/<sha256 of the key>`, written to a temporary file and renamed:
/// the value, then the SHA-256 of the value (`ENTRY_DIGEST_BYTES`). Entries are not synced to
/// disk: syncing each of the 10,000-odd functions of a Python or JavaScript component
/// doubled its first deploy (bench/RESULTS.md 2026-12-05). An entry a crash cut short or a
/// disk changed fails its digest and is a miss (and removed), never machine code.
/// The total is bounded by `bytes_max`: at start the least recently used entries go until
/// the rest fit in three quarters of it; while running, entries past it are not stored.
/// Bytes after each incremental entry's value: its SHA-256.
const ENTRY_DIGEST_BYTES: u64 = 32;

#[derive(Debug)]
pub(crate) struct IncrementalStore {
    dir: PathBuf,
    bytes: AtomicU64,
    bytes_max: u64,
    hits: AtomicU64,
    inserts: AtomicU64,
    inserted_bytes: AtomicU64,
}

impl IncrementalStore {
    pub(crate) fn open(dir: &Path, bytes_max: u64) -> io::Result<IncrementalStore> {
        ensure_private_dir(dir)?;
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                // Renamed or removed since the directory was read: another process sharing it
                // (a second node, a compile worker) finished writing or trimmed it.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if !meta.is_file() {
                continue;
            }
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some((_, tmp)) = name.split_once(".tmp") {
                // Being written by another process sharing the directory (a second node, a
                // compile worker): left to it. Otherwise left by a crash between write and
                // rename.
                if !writer_is_alive(tmp) {
                    let _ = std::fs::remove_file(entry.path());
                }
                continue;
            }
            let used = meta.modified().unwrap_or(std::time::SystemTime::UNIX_EPOCH);
            let value_len = meta.len().saturating_sub(ENTRY_DIGEST_BYTES);
            entries.push((used, value_len, entry.path()));
        }
        let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
        if total > bytes_max {
            entries.sort();
            let target = bytes_max / 4 * 3;
            for (_, len, path) in entries {
                if total <= target {
                    break;
                }
                if std::fs::remove_file(&path).is_ok() {
                    total -= len;
                }
            }
        }
        Ok(IncrementalStore {
            dir: dir.to_path_buf(),
            bytes: AtomicU64::new(total),
            bytes_max,
            hits: AtomicU64::new(0),
            inserts: AtomicU64::new(0),
            inserted_bytes: AtomicU64::new(0),
        })
    }

    /// Bytes of all entries.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Entries found and entries stored since start.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.inserts.load(Ordering::Relaxed),
        )
    }

    /// Its directory and its bytes limit (for the compile worker, which opens it too).
    pub(crate) fn location(&self) -> (&Path, u64) {
        (&self.dir, self.bytes_max)
    }

    /// Bytes of the entries stored since start.
    pub(crate) fn inserted_bytes(&self) -> u64 {
        self.inserted_bytes.load(Ordering::Relaxed)
    }

    /// Count what a compile worker found and stored in the same directory.
    pub(crate) fn add_worker(&self, hits: u64, inserts: u64, bytes: u64) {
        self.hits.fetch_add(hits, Ordering::Relaxed);
        self.inserts.fetch_add(inserts, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
    }

    fn path(&self, key: &[u8]) -> PathBuf {
        use sha2::{Digest, Sha256};
        self.dir.join(hex::encode(Sha256::digest(key)))
    }
}

impl wasmtime::CacheStore for IncrementalStore {
    fn get(&self, key: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        // Machine code: never through a symlink (the directory is checked to be ours at start).
        let mut file = std::fs::File::options()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.path(key))
            .ok()?;
        let mut value = Vec::new();
        file.read_to_end(&mut value).ok()?;
        if !take_digest(&mut value) {
            let len = (value.len() as u64).saturating_sub(ENTRY_DIGEST_BYTES);
            if std::fs::remove_file(self.path(key)).is_ok() {
                let _ = self
                    .bytes
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bytes| {
                        Some(bytes.saturating_sub(len))
                    });
            }
            return None;
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        // Recently used: kept first when the store is trimmed at start.
        let _ = file.set_modified(std::time::SystemTime::now());
        Some(std::borrow::Cow::Owned(value))
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let len = value.len() as u64;
        let reserved = self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bytes| {
                (bytes + len <= self.bytes_max).then_some(bytes + len)
            });
        if reserved.is_err() {
            return false;
        }
        let mut entry = value;
        entry.extend_from_slice(&digest(&entry));
        if write_atomically(&self.path(key), &entry, Sync::Unsynced).is_err() {
            self.bytes.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        self.inserts.fetch_add(1, Ordering::Relaxed);
        self.inserted_bytes.fetch_add(len, Ordering::Relaxed);
        true
    }
}

/// Whether the process that names a temporary file (`<pid>-<n>`, `write_atomically`) is
/// running. A pid the kernel gave to another process since keeps its file until a later
/// start; nothing reads it.
fn writer_is_alive(tmp_suffix: &str) -> bool {
    let Some(Ok(pid)) = tmp_suffix.split('-').next().map(str::parse::<libc::pid_t>) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // Signal 0: only whether the process exists (EPERM: it does, as another user's).
    // SAFETY: kill with signal 0 sends nothing; pid is positive, so it names one process.
    let exists = unsafe { libc::kill(pid, 0) } == 0;
    exists || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn digest(bytes: &[u8]) -> [u8; ENTRY_DIGEST_BYTES as usize] {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).into()
}

/// Strips the digest off an entry read from disk; false if it is not there or does not match
/// (`entry` is then the whole file, for its length).
fn take_digest(entry: &mut Vec<u8>) -> bool {
    let Some(value_len) = entry.len().checked_sub(ENTRY_DIGEST_BYTES as usize) else {
        return false;
    };
    if digest(&entry[..value_len]) != entry[value_len..] {
        return false;
    }
    entry.truncate(value_len);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::CacheStore;

    fn entries(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    #[test]
    fn the_incremental_store_gives_back_what_it_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = IncrementalStore::open(dir.path(), 1000).unwrap();
        assert_eq!(store.get(b"k"), None);
        assert!(store.insert(b"k", vec![1, 2, 3]));
        assert_eq!(store.get(b"k").as_deref(), Some(&[1, 2, 3][..]));
        assert_eq!(store.counts(), (1, 1));
        assert_eq!(store.bytes(), 3);
        // On disk: a new store over the same directory finds it.
        let again = IncrementalStore::open(dir.path(), 1000).unwrap();
        assert_eq!(again.get(b"k").as_deref(), Some(&[1, 2, 3][..]));
        assert_eq!(again.bytes(), 3);
    }

    #[test]
    fn an_entry_cut_short_or_changed_on_disk_is_a_miss_not_machine_code() {
        type Damage = fn(&mut Vec<u8>);
        let damages: [(&str, Damage); 3] = [
            ("cut short", |bytes| bytes.truncate(bytes.len() - 10)),
            ("a changed byte", |bytes| bytes[3] ^= 1),
            ("empty", |bytes| bytes.clear()),
        ];
        for (damage, apply) in damages {
            let dir = tempfile::tempdir().unwrap();
            let store = IncrementalStore::open(dir.path(), 1000).unwrap();
            assert!(store.insert(b"k", vec![7; 100]), "{damage}");
            assert_eq!(store.get(b"k").as_deref(), Some(&[7; 100][..]), "{damage}");
            // What a crash can leave when the data never reached the disk, or a disk's fault.
            let path = store.path(b"k");
            let mut bytes = std::fs::read(&path).unwrap();
            apply(&mut bytes);
            std::fs::write(&path, &bytes).unwrap();
            assert_eq!(store.get(b"k"), None, "{damage}: a damaged entry is a miss");
            assert!(!path.exists(), "{damage}: and it is removed");
            assert_eq!(
                store.counts(),
                (1, 1),
                "{damage}: one hit, before the damage"
            );
            // Compiled again, it is stored again.
            assert!(store.insert(b"k", vec![7; 100]), "{damage}");
            assert_eq!(store.get(b"k").as_deref(), Some(&[7; 100][..]), "{damage}");
        }
    }

    #[test]
    fn the_incremental_store_stays_within_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = IncrementalStore::open(dir.path(), 100).unwrap();
        assert!(store.insert(b"a", vec![0; 60]));
        assert!(!store.insert(b"b", vec![0; 60]), "160 bytes is past 100");
        assert!(store.insert(b"c", vec![0; 40]));
        assert_eq!((store.bytes(), entries(dir.path())), (100, 2));
        assert_eq!(store.get(b"b"), None);

        // Over the bound at start (it was lowered): least recently used go first, until the
        // rest fit in three quarters.
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        let path_a = store.path(b"a");
        std::fs::File::options()
            .write(true)
            .open(&path_a)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let smaller = IncrementalStore::open(dir.path(), 80).unwrap();
        assert_eq!(smaller.bytes(), 40);
        assert_eq!(smaller.get(b"a"), None, "the older entry went");
        assert!(smaller.get(b"c").is_some());
    }

    #[test]
    fn a_starting_store_leaves_alone_what_a_live_process_is_writing() {
        let dir = tempfile::tempdir().unwrap();
        // Being written by a live process (this one), as by another node sharing the directory.
        let in_flight = dir.path().join(format!("abc.tmp{}-0", std::process::id()));
        std::fs::write(&in_flight, [0; 10]).unwrap();
        let store = IncrementalStore::open(dir.path(), 100).unwrap();
        assert!(in_flight.exists(), "another writer's entry is left to it");
        assert_eq!(store.bytes(), 0, "and is not counted as an entry");
    }

    #[test]
    fn a_store_opens_while_another_process_writes_entries_into_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let writer = IncrementalStore::open(dir.path(), u64::MAX).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let churn = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                // Temporary files appear and are renamed away, as another node's compiler's do
                // (over the same 64 entries, so the directory stays small).
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    assert!(writer.insert(&(n % 64).to_le_bytes(), vec![1; 8]));
                    n += 1;
                }
            })
        };
        for _ in 0..300 {
            IncrementalStore::open(dir.path(), u64::MAX)
                .expect("entries that vanish while the directory is read are not an error");
        }
        stop.store(true, Ordering::Relaxed);
        churn.join().unwrap();
    }

    #[test]
    fn leftovers_of_a_crash_are_removed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        // Written by a process that is gone.
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        gone.wait().unwrap();
        let name = format!("abc.tmp{}-0", gone.id());
        std::fs::write(dir.path().join(name), [0; 10]).unwrap();
        let store = IncrementalStore::open(dir.path(), 100).unwrap();
        assert_eq!((store.bytes(), entries(dir.path())), (0, 0));
    }
}
