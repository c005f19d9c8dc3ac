//! The in-process cost of one request to a warm instance, with no network: what a
//! `wasi:http` guest call costs by itself, as a floor under any HTTP server that runs it.
//!
//! Usage: guest-call COMPONENT [REQUESTS]
//!
//! Prints one line per measurement, `name microseconds-per-request`:
//! - `wasmtime`: bare Wasmtime 48 and wasmtime-wasi-http, the way an embedder with no
//!   limits or metering would call it: one instance, `handle` called with a synthetic GET,
//!   the response body read to its end.
//! - `wasmtime-epoch`: the same with epoch interruption compiled in, as eddy compiles every
//!   guest to stop it at its timeout (a check at every function entry and loop back-edge).
//! - `eddy`: the same request through `eddy_runtime::Deployment::invoke` with reuse on
//!   (limits, CPU metering, the report, the instance back to its pool each time).
//! - `eddy-metered-cpu`: the guest CPU time eddy metered for those requests, on average.
//!
//! Single-threaded (a current-thread Tokio runtime). Each is measured over REQUESTS (default
//! 5000) after 500 to warm up, in 5 interleaved rounds; the fastest round is printed (noise
//! from other work on the machine only ever adds time).
//!
//! With `GUEST_CALL_PERFMAP=1` the bare engines write `/tmp/perf-PID.map`, so `perf record`
//! and `perf report` name the guest's own functions (where the component has a name section).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

const WARM_UP_REQUESTS: u32 = 500;
const DEFAULT_REQUESTS: u32 = 5000;
const ROUNDS: u32 = 5;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let component = args
        .next()
        .context("usage: guest-call COMPONENT [REQUESTS]")?;
    let requests = match args.next() {
        Some(n) => n.parse().context("REQUESTS must be a number")?,
        None => DEFAULT_REQUESTS,
    };
    let bytes = std::fs::read(&component).with_context(|| format!("reading {component}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        // Interleaved rounds, the fastest kept: on a shared machine the noise only adds.
        // Compiled once each; every round gets fresh instances.
        let plain = bare_pre(&bytes, false)?;
        let epoch = bare_pre(&bytes, true)?;
        let cache = std::env::temp_dir().join(format!("eddy-guest-call-{}", std::process::id()));
        let mut best = [f64::MAX; 4];
        let mut rounds = async || -> Result<()> {
            for _ in 0..ROUNDS {
                best[0] = best[0].min(bare_wasmtime(&plain, requests).await?);
                best[1] = best[1].min(bare_wasmtime(&epoch, requests).await?);
                let (eddy, metered) = eddy(&bytes, &cache, requests).await?;
                best[2] = best[2].min(eddy);
                best[3] = best[3].min(metered);
            }
            Ok(())
        };
        let result = rounds().await;
        let _ = std::fs::remove_dir_all(&cache);
        result?;
        println!("wasmtime {:.2}", best[0]);
        println!("wasmtime-epoch {:.2}", best[1]);
        println!("eddy {:.2}", best[2]);
        println!("eddy-metered-cpu {:.2}", best[3]);
        Ok(())
    })
}

fn request() -> http::Request<Empty<Bytes>> {
    http::Request::builder()
        .uri("http://localhost/hello")
        .header(http::header::HOST, "localhost")
        .body(Empty::new())
        .expect("a valid request")
}

/// Microseconds per request of `run`, after warming up.
async fn per_request<F, Fut>(requests: u32, mut run: F) -> Result<f64>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    for _ in 0..WARM_UP_REQUESTS {
        run().await?;
    }
    let start = Instant::now();
    for _ in 0..requests {
        run().await?;
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / f64::from(requests))
}

struct Bare {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: NoOutgoing,
}

/// The hello guests send no requests; any attempt is refused.
struct NoOutgoing;

type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<wasmtime_wasi_http::WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for NoOutgoing {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _io: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendFuture {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

impl WasiView for Bare {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Bare {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// The component compiled and linked for bare Wasmtime; `epoch`: with epoch interruption
/// compiled in (as eddy has it, to stop guests at their timeout).
fn bare_pre(bytes: &[u8], epoch: bool) -> Result<ProxyPre<Bare>> {
    let mut config = Config::new();
    config.epoch_interruption(epoch);
    if std::env::var_os("GUEST_CALL_PERFMAP").is_some_and(|v| v == "1") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    let engine = Engine::new(&config)?;
    let component = Component::new(&engine, bytes)?;
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    Ok(ProxyPre::new(linker.instantiate_pre(&component)?)?)
}

/// Microseconds per request on one warm instance of `pre` (with epoch interruption, its
/// deadline is never reached; without, the deadline means nothing).
// One request at a time: the store's borrow is never contended across the await.
#[allow(clippy::await_holding_refcell_ref)]
async fn bare_wasmtime(pre: &ProxyPre<Bare>, requests: u32) -> Result<f64> {
    let mut store = Store::new(
        pre.engine(),
        Bare {
            wasi: WasiCtx::builder().build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: NoOutgoing,
        },
    );
    store.set_epoch_deadline(u64::MAX / 2);
    let proxy = pre.instantiate_async(&mut store).await?;
    let store = std::cell::RefCell::new(store);
    per_request(requests, || async {
        let mut store = store.borrow_mut();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request())?;
        let out = store.data_mut().http().new_response_outparam(tx)?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut *store, req, out)
            .await?;
        let response = rx.await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let body = response.into_body().collect().await?.to_bytes();
        if body.is_empty() {
            bail!("the guest answered with an empty body");
        }
        Ok(())
    })
    .await
}

/// Microseconds per request through eddy, and the guest CPU eddy metered per request.
/// `cache`: the compile cache, kept between rounds.
async fn eddy(bytes: &[u8], cache: &Path, requests: u32) -> Result<(f64, f64)> {
    let runtime =
        eddy_runtime::Runtime::new(eddy_runtime::RuntimeConfig::new(cache.to_path_buf()))?;
    let prepared = runtime.prepare(bytes)?;
    let deployment = eddy_runtime::Deployment::new(
        &runtime,
        &prepared,
        eddy_runtime::DeploymentSettings {
            limits: eddy_runtime::FunctionLimits::default(),
            env: Vec::new(),
            reuse: Some(eddy_runtime::ReuseConfig::default()),
            outbound: Vec::new(),
            instances_live: Arc::new(AtomicUsize::new(0)),
            platform: None,
        },
    );
    let cpu_ns = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let result = per_request(requests, || async {
        let cpu_ns = cpu_ns.clone();
        let response = deployment
            .invoke(request(), (), move |report| {
                assert_eq!(report.outcome, eddy_runtime::Outcome::Ok);
                cpu_ns.fetch_add(
                    report.cpu.as_nanos() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
            })
            .await
            .map_err(|failure| anyhow::anyhow!("{}", failure.message))?;
        let body = response.into_body().collect().await?.to_bytes();
        if body.is_empty() {
            bail!("the guest answered with an empty body");
        }
        Ok(())
    })
    .await;
    let metered = cpu_ns.load(std::sync::atomic::Ordering::Relaxed) as f64
        / 1e3
        / f64::from(requests + WARM_UP_REQUESTS);
    drop(deployment);
    drop(runtime);
    Ok((result?, metered))
}
