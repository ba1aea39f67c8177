//! Compiled components are kept by the sha256 of their bytes, in memory and on disk; a disk entry that
//! does not check out is refused and rebuilt, never run.

use crate::support;

use std::path::Path;

use pitboss::plugins::{CacheStats, CallOptions, Runtime, RuntimeConfig, World};

fn runtime(dir: &Path) -> Runtime {
    Runtime::new(RuntimeConfig { cache_dir: Some(dir.to_path_buf()), ..RuntimeConfig::default() }).unwrap()
}

fn decides(rt: &Runtime) {
    let p = support::load(rt, "dormant-depositor");
    let run = rt.segment(&p, &CallOptions::new(World::Segment, support::now()), &support::profile("p"), None);
    assert!(run.outcome.unwrap().member);
}

fn cache_file(dir: &Path) -> std::path::PathBuf {
    let digest = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(support::wasm(
        "dormant-depositor",
    )));
    dir.join(format!("{}.cwasm", hex::encode(digest)))
}

#[test]
fn a_compiled_component_is_reused_from_memory_and_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let first = runtime(dir.path());
    decides(&first);
    decides(&first);
    assert_eq!(first.cache_stats(), CacheStats { compiled: 1, memory_hits: 1, ..CacheStats::default() });
    assert!(cache_file(dir.path()).exists());

    let restarted = runtime(dir.path());
    decides(&restarted);
    assert_eq!(restarted.cache_stats(), CacheStats { disk_hits: 1, ..CacheStats::default() });
}

#[test]
fn a_corrupted_cache_file_is_detected_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    decides(&runtime(dir.path()));
    let file = cache_file(dir.path());
    let pristine = std::fs::read(&file).unwrap();

    let corruptions: Vec<(&str, Vec<u8>)> = vec![
        ("one flipped byte in the code", {
            let mut b = pristine.clone();
            let i = b.len() - 100;
            b[i] ^= 0x40;
            b
        }),
        ("truncated", pristine[..pristine.len() / 3].to_vec()),
        ("another engine's header", {
            let mut b = pristine.clone();
            b[10] ^= 1;
            b
        }),
        ("not ours at all", b"garbage".to_vec()),
        ("empty", Vec::new()),
    ];
    for (what, bytes) in corruptions {
        std::fs::write(&file, bytes).unwrap();
        let rt = runtime(dir.path());
        decides(&rt);
        let stats = rt.cache_stats();
        assert_eq!(stats, CacheStats { compiled: 1, disk_rejected: 1, ..CacheStats::default() }, "{what}");
        // Rebuilt: the next start trusts the file again.
        let again = runtime(dir.path());
        decides(&again);
        assert_eq!(again.cache_stats().disk_hits, 1, "{what}");
    }
}

#[test]
fn concurrent_loads_of_the_same_bytes_compile_once() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| decides(&rt));
        }
    });
    assert_eq!(rt.cache_stats().compiled, 1);
}
