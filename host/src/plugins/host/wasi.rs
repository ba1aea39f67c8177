//! The WASI context of a guest whose toolchain imports WASI (every `wasm32-wasip2` Rust guest, Python,
//! JavaScript): nothing granted. No preopened directory, no environment, no arguments, no sockets; stdin
//! closed and stdout discarded; stderr kept (bounded) so that a guest's panic message can be reported;
//! both clocks frozen at the decision's time; the random streams seeded, so a decision replays exactly.
//!
//! Built only when the guest first touches WASI: most decisions never do, and building it costs more than
//! a small rule's whole evaluation.

use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::{MemoryOutputPipe, SinkOutputStream};
use wasmtime_wasi::random::Deterministic;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::PluginState;

/// How much of a guest's stderr is kept for error reports.
const STDERR_BYTES: usize = 8 * 1024;

pub(crate) struct LazyWasi {
    now_ms: i64,
    state: Option<(WasiCtx, ResourceTable, MemoryOutputPipe)>,
}

impl LazyWasi {
    pub(crate) fn new(now_ms: i64) -> Self {
        LazyWasi { now_ms, state: None }
    }

    /// What the guest wrote to stderr, if it ever touched WASI.
    pub(crate) fn stderr(&self) -> Option<String> {
        let (_, _, pipe) = self.state.as_ref()?;
        let bytes = pipe.contents();
        (!bytes.is_empty()).then(|| String::from_utf8_lossy(&bytes).into_owned())
    }
}

struct FrozenWall(Duration);

impl HostWallClock for FrozenWall {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        self.0
    }
}

struct FrozenMonotonic;

impl HostMonotonicClock for FrozenMonotonic {
    fn resolution(&self) -> u64 {
        1_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let lazy = &mut self.wasi;
        let now_ms = lazy.now_ms;
        let (ctx, table, _) = lazy.state.get_or_insert_with(|| {
            let stderr = MemoryOutputPipe::new(STDERR_BYTES);
            let seed: Vec<u8> = now_ms.to_le_bytes().iter().copied().chain(*b"pitboss-decision").collect();
            let ctx = WasiCtx::builder()
                .stdout(SinkOutputStream)
                .stderr(stderr.clone())
                .wall_clock(FrozenWall(Duration::from_millis(now_ms.max(0) as u64)))
                .monotonic_clock(FrozenMonotonic)
                .secure_random(Deterministic::new(seed.clone()))
                .insecure_random(Deterministic::new(seed))
                .insecure_random_seed(now_ms as u128)
                .allow_tcp(false)
                .allow_udp(false)
                .allow_ip_name_lookup(false)
                .build();
            (ctx, ResourceTable::new(), stderr)
        });
        WasiCtxView { ctx, table }
    }
}
