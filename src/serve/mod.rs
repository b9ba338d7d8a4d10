//! `ran serve`: an inspection service. HTTP (axum on tokio) in front of one model worker that
//! batches the queued images (see worker.rs); limits, authentication and metrics in front of
//! it (routes.rs, auth.rs, metrics.rs); a page at `/` (page.html, in the binary).

pub mod auth;
pub mod base64;
pub mod metrics;
pub mod routes;
pub mod store;
pub mod worker;

use crate::{Error, Result};
use routes::{AppState, Limits};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use worker::WorkerConfig;

pub struct ServeConfig {
    pub worker: WorkerConfig,
    pub bind: SocketAddr,
    pub token: Option<String>,
    pub limits: Limits,
    /// recent results whose pictures are kept
    pub keep_results: usize,
}

/// Runs the service until SIGTERM or SIGINT: then it stops accepting, answers what it has
/// accepted, and returns. An error before serving (the bind, the model) is returned.
pub fn run(cfg: ServeConfig) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(|e| Error::InvalidArgument(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(serve(cfg))
}

async fn serve(cfg: ServeConfig) -> Result<()> {
    let metrics = Arc::new(metrics::Metrics::new(cfg.worker.max_batch));
    let (tx, rx) = std::sync::mpsc::channel();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let listener = tokio::net::TcpListener::bind(cfg.bind).await.map_err(|e| Error::InvalidArgument(format!("cannot bind {}: {e}", cfg.bind)))?;
    let addr = listener.local_addr().map_err(|e| Error::InvalidArgument(format!("bound address: {e}")))?;
    let st = Arc::new(AppState { info: OnceLock::new(), jobs: Mutex::new(Some(tx)), metrics: metrics.clone(), store: store::ResultStore::new(cfg.keep_results), token: cfg.token, limits: cfg.limits });
    // tests and scripts read the address (an ephemeral port with --bind 127.0.0.1:0)
    println!("listening on http://{addr}");
    let worker = worker::spawn(cfg.worker, rx, metrics, ready_tx);
    let stop = Arc::new(tokio::sync::Notify::new());
    let failed: Arc<Mutex<Option<Error>>> = Arc::new(Mutex::new(None));
    {
        let (st, stop, failed) = (st.clone(), stop.clone(), failed.clone());
        tokio::spawn(async move {
            match ready_rx.await {
                Ok(Ok(info)) => {
                    println!("ready: model {}, calibration {}, backend {}, precision {}", info.model_id, info.calibration_id, info.backend, info.precision);
                    let _ = st.info.set(info);
                }
                Ok(Err(e)) => {
                    *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    stop.notify_one();
                }
                Err(_) => stop.notify_one(),
            }
        });
    }
    for kind in [tokio::signal::unix::SignalKind::terminate(), tokio::signal::unix::SignalKind::interrupt()] {
        let mut sig = tokio::signal::unix::signal(kind).map_err(|e| Error::InvalidArgument(format!("cannot watch signals: {e}")))?;
        let stop = stop.clone();
        tokio::spawn(async move {
            if sig.recv().await.is_some() {
                eprintln!("stopping: no new connections; answering the accepted requests");
                stop.notify_one();
            }
        });
    }
    let app = routes::router(st.clone());
    let served = axum::serve(listener, app).with_graceful_shutdown(async move { stop.notified().await }).await;
    // every accepted request is answered: close the queue and let the worker finish
    st.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
    let _ = tokio::task::spawn_blocking(move || worker.join()).await;
    if let Some(e) = failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(e);
    }
    served.map_err(|e| Error::InvalidArgument(format!("serving: {e}")))
}
