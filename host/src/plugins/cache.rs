//! Compiled code across restarts: `<dir>/<sha256 of the component>.cwasm`, written by this host only.
//!
//! A file is trusted only if its header names this engine's exact configuration and the sha256 of its
//! body matches the one recorded in the header; anything else (truncated, edited, another wasmtime
//! version or configuration) is reported as rejected, and the caller recompiles and overwrites it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::Digest;

const MAGIC: &[u8; 8] = b"PBCWASM1";
const HEADER: usize = 8 + 32 + 32;

pub(crate) struct DiskCache {
    dir: PathBuf,
    /// Identifies the engine's configuration and version: code from any other engine is refused.
    engine_id: [u8; 32],
}

/// What looking a component up on disk found.
pub(crate) enum Lookup {
    Hit(Component),
    Miss,
    /// A file was there but is not ours to trust; the reason says why.
    Rejected(String),
}

impl DiskCache {
    pub(crate) fn open(dir: &Path, engine: &Engine) -> anyhow::Result<Self> {
        fs::create_dir_all(dir)?;
        let mut h = HashToSha256(Sha256::new());
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
        h.0.update(env!("CARGO_PKG_VERSION").as_bytes());
        Ok(DiskCache { dir: dir.to_path_buf(), engine_id: h.0.finalize().into() })
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(format!("{}.cwasm", hex::encode(digest)))
    }

    pub(crate) fn load(&self, engine: &Engine, digest: &Digest) -> Lookup {
        let bytes = match fs::read(self.path(digest)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Lookup::Miss,
            Err(e) => return Lookup::Rejected(format!("unreadable: {e}")),
        };
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return Lookup::Rejected("not a Pitboss code cache file".into());
        }
        if bytes[8..40] != self.engine_id {
            return Lookup::Rejected("compiled by another engine configuration".into());
        }
        let body = &bytes[HEADER..];
        if Sha256::digest(body).as_slice() != &bytes[40..72] {
            return Lookup::Rejected("checksum mismatch".into());
        }
        match deserialize(engine, body) {
            Ok(c) => Lookup::Hit(c),
            Err(e) => Lookup::Rejected(format!("refused by wasmtime: {e}")),
        }
    }

    /// Writes atomically (temporary file + rename), so a crash never leaves a half-written entry.
    pub(crate) fn store(&self, digest: &Digest, component: &Component) -> anyhow::Result<()> {
        let body = component.serialize().map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut tmp = tempfile_in(&self.dir)?;
        tmp.1.write_all(MAGIC)?;
        tmp.1.write_all(&self.engine_id)?;
        tmp.1.write_all(&Sha256::digest(&body))?;
        tmp.1.write_all(&body)?;
        tmp.1.sync_all()?;
        fs::rename(&tmp.0, self.path(digest))?;
        Ok(())
    }
}

fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, fs::File)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let name = format!(".tmp-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let path = dir.join(name);
    let f = fs::File::create(&path)?;
    Ok((path, f))
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, body: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `body` was written by `DiskCache::store` of an engine with the same configuration: the
    // header's engine id and the body's sha256 were checked just before, so these are bytes this host
    // produced with `Component::serialize`, unmodified.
    unsafe { Component::deserialize(engine, body) }
}

/// Lets a `std::hash::Hash` value feed a sha256.
struct HashToSha256(Sha256);

impl std::hash::Hasher for HashToSha256 {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}
