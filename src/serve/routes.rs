//! The HTTP side: routes, limits, authentication and the JSON answers.

use super::auth::bearer_ok;
use super::store::{new_id, Pictures, ResultStore};
use super::worker::{Job, ModelInfo, Scored};
use crate::io::image::{center_crop_arr, decode_rgb_bytes, ImageLimits};
use crate::serve::metrics::Metrics;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The page at `/`, in the binary (no CDN: it works offline).
const PAGE: &str = include_str!("page.html");

pub struct Limits {
    pub max_body_bytes: usize,
    pub max_images: usize,
    pub image: ImageLimits,
    pub timeout: Duration,
    /// images accepted and not yet taken by the model (beyond: 503)
    pub queue: usize,
}

pub struct AppState {
    pub info: OnceLock<Arc<ModelInfo>>,
    /// None once the service is stopping
    pub jobs: Mutex<Option<std::sync::mpsc::Sender<Job>>>,
    pub metrics: Arc<Metrics>,
    pub store: ResultStore,
    pub token: Option<String>,
    pub limits: Limits,
}

/// A JSON error answer.
fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut r = (status, [(header::CONTENT_TYPE, "application/json")], json!({ "error": msg.into() }).to_string()).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

pub fn router(st: Arc<AppState>) -> Router {
    let limit = st.limits.max_body_bytes;
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/info", get(model_info))
        .route("/v1/detect", post(detect))
        .route("/v1/results/{id}/{file}", get(result_file))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(st.clone(), guard))
        .with_state(st)
}

/// The route as metrics label it (result ids would make one series per result).
fn route_label(path: &str) -> &'static str {
    match path {
        "/" => "/",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        "/v1/detect" => "/v1/detect",
        "/v1/info" => "/v1/info",
        p if p.starts_with("/v1/results/") => "/v1/results",
        _ => "other",
    }
}

/// Around every request: cross-origin requests refused (no CORS: a page of another site may
/// not make the browser post here), the token checked (all but the page and the probes), and
/// the answer counted.
async fn guard(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let t0 = Instant::now();
    let route = route_label(req.uri().path());
    let resp = match refuse(&st, route, req.headers()) {
        Some(r) => r,
        None if route == "/v1/detect" => {
            let _counted = InFlight::enter(&st.metrics.in_flight);
            next.run(req).await
        }
        None => next.run(req).await,
    };
    st.metrics.request(route, resp.status().as_u16(), t0.elapsed().as_secs_f64());
    resp
}

/// Counts a request in flight until dropped (also when the client hangs up and the handler is dropped).
struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(n: &'a std::sync::atomic::AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        InFlight(n)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn refuse(st: &AppState, route: &str, h: &HeaderMap) -> Option<Response> {
    if let Some(origin) = h.get(header::ORIGIN) {
        let host = h.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
        let same = origin.to_str().ok().is_some_and(|o| o.strip_prefix("http://").or_else(|| o.strip_prefix("https://")) == Some(host));
        if !same {
            return Some(error(StatusCode::FORBIDDEN, "cross-origin requests are not served (no CORS)"));
        }
    }
    if let Some(token) = &st.token {
        let open = matches!(route, "/" | "/healthz" | "/readyz");
        if !open && !bearer_ok(h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()), token) {
            return Some(error(StatusCode::UNAUTHORIZED, "missing or wrong token: send `Authorization: Bearer <token>`"));
        }
    }
    None
}

async fn page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response()
}

async fn readyz(State(st): State<Arc<AppState>>) -> Response {
    match st.info.get() {
        Some(i) => (StatusCode::OK, format!("ready: model {}, calibration {}, backend {}, precision {}\n", i.model_id, i.calibration_id, i.backend, i.precision)).into_response(),
        None => error(StatusCode::SERVICE_UNAVAILABLE, "loading the model"),
    }
}

/// The model, the calibration and its classes with their thresholds.
async fn model_info(State(st): State<Arc<AppState>>) -> Response {
    let Some(i) = st.info.get() else { return error(StatusCode::SERVICE_UNAVAILABLE, "loading the model") };
    let classes: Vec<serde_json::Value> = i
        .calibration
        .iter()
        .map(|(y, e)| json!({ "class": y, "name": e.name, "threshold": e.threshold, "threshold_source": e.source, "validation": e.validation, "normal_p999": e.calibration.normal_p999, "normal_images": e.calibration.statistics.images }))
        .collect();
    let body = json!({ "model_id": i.model_id, "calibration_id": i.calibration_id, "backend": i.backend, "precision": i.precision.as_str(), "image_size": i.image_size, "classes": classes });
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], st.metrics.render()).into_response()
}

async fn result_file(State(st): State<Arc<AppState>>, UrlPath((id, file)): UrlPath<(String, String)>) -> Response {
    let Some(p) = st.store.get(&id) else { return error(StatusCode::NOT_FOUND, "no such result (unknown id, or dropped from the store of recent results)") };
    let bytes = match file.as_str() {
        "overlay.png" => p.overlay.clone(),
        "heatmap.png" => p.heatmap.clone(),
        _ => return error(StatusCode::NOT_FOUND, "overlay.png or heatmap.png"),
    };
    ([(header::CONTENT_TYPE, "image/png")], Body::from(bytes)).into_response()
}

#[derive(serde::Deserialize, Default)]
struct DetectQuery {
    class: Option<String>,
    inline: Option<String>,
}

/// The uploads of a request: (name, bytes) and the class field of a multipart form.
async fn uploads(st: &Arc<AppState>, req: Request) -> Result<(Vec<(String, Bytes)>, Option<String>), Response> {
    let multipart = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|c| c.starts_with("multipart/form-data"));
    if !multipart {
        let body = Bytes::from_request(req, st).await.map_err(|e| error(e.status(), format!("request body: {}", e.body_text())))?;
        return Ok((vec![("body".to_string(), body)], None));
    }
    let mut mp = axum::extract::Multipart::from_request(req, st).await.map_err(|e| error(e.status(), e.body_text()))?;
    let (mut files, mut class) = (Vec::new(), None);
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(error(e.status(), format!("multipart body: {}", e.body_text()))),
        };
        let name = field.name().unwrap_or("").to_string();
        let file_name = field.file_name().map(str::to_string);
        let data = field.bytes().await.map_err(|e| error(e.status(), format!("multipart field `{name}`: {}", e.body_text())))?;
        if name == "class" && file_name.is_none() {
            class = Some(String::from_utf8_lossy(&data).trim().to_string());
            continue;
        }
        files.push((file_name.unwrap_or_else(|| format!("part {}", files.len() + 1)), data));
        if files.len() > st.limits.max_images {
            return Err(error(StatusCode::PAYLOAD_TOO_LARGE, format!("more than {} images in one request (--max-images)", st.limits.max_images)));
        }
    }
    Ok((files, class))
}

async fn detect(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let t0 = Instant::now();
    let deadline = t0 + st.limits.timeout;
    let Some(info) = st.info.get().cloned() else { return error(StatusCode::SERVICE_UNAVAILABLE, "the model is still loading") };
    let q: DetectQuery = Query::try_from_uri(req.uri()).map(|Query(q)| q).unwrap_or_default();
    let inline = q.inline.as_deref().is_some_and(|v| v == "1" || v == "true");
    let (files, form_class) = match uploads(&st, req).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    if files.is_empty() || files.iter().all(|f| f.1.is_empty()) {
        return error(StatusCode::BAD_REQUEST, "no image: send a PNG or JPEG as the body, or several as multipart/form-data");
    }
    let class = q.class.or(form_class);
    // decode and preprocess off the async threads; a bad image fails the request, named
    let size = info.image_size;
    let lim = st.limits.image;
    let inf = info.clone();
    let prepared = tokio::task::spawn_blocking(move || {
        files
            .into_iter()
            .map(|(name, bytes)| {
                if bytes.is_empty() {
                    return Err((StatusCode::BAD_REQUEST, format!("{name}: empty")));
                }
                let img = decode_rgb_bytes(std::path::Path::new(&name), &bytes, &lim).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
                let y = inf.class_for(class.as_deref(), &name).map_err(|e| (StatusCode::BAD_REQUEST, e))?;
                Ok((name, center_crop_arr(&img, size), y))
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await;
    let prepared = match prepared {
        Ok(Ok(p)) => p,
        Ok(Err((status, msg))) => return error(status, msg),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("decoding failed: {e}")),
    };
    let decode_seconds = t0.elapsed().as_secs_f64();
    // the queue holds at most `queue` images: a request that does not fit is refused whole
    let n = prepared.len();
    let depth = &st.metrics.queue_depth;
    if depth.fetch_add(n, Ordering::SeqCst) + n > st.limits.queue {
        depth.fetch_sub(n, Ordering::SeqCst);
        return error(StatusCode::SERVICE_UNAVAILABLE, format!("the queue is full ({} images waiting, --queue {}): retry later", depth.load(Ordering::Relaxed), st.limits.queue));
    }
    let mut waiting = Vec::with_capacity(n);
    {
        let guard = st.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = guard.as_ref() else {
            depth.fetch_sub(n, Ordering::SeqCst);
            return error(StatusCode::SERVICE_UNAVAILABLE, "the service is stopping");
        };
        for (name, img, class) in prepared {
            let (reply, rx) = tokio::sync::oneshot::channel();
            let job = Job { img, class, enqueued: Instant::now(), deadline, reply };
            if tx.send(job).is_err() {
                return error(StatusCode::SERVICE_UNAVAILABLE, "the model worker has stopped");
            }
            waiting.push((name, class, rx));
        }
    }
    let mut results = Vec::with_capacity(n);
    for (name, class, rx) in waiting {
        let scored: Scored = match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(Ok(s))) => s,
            Ok(Ok(Err(e))) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("{name}: scoring failed: {e}")),
            Ok(Err(_)) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("{name}: the model worker dropped the image")),
            Err(_) => return error(StatusCode::GATEWAY_TIMEOUT, format!("{name}: no answer within {:?} (--timeout-s)", st.limits.timeout)),
        };
        results.push(answer(&st, &info, &name, class, scored, inline, decode_seconds, t0));
    }
    let results: Vec<serde_json::Value> = match results.into_iter().collect() {
        Ok(r) => r,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let body = json!({ "model_id": info.model_id, "calibration_id": info.calibration_id, "results": results });
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// One image's JSON answer; its pictures stored (or inlined).
#[allow(clippy::too_many_arguments)]
fn answer(st: &AppState, info: &ModelInfo, name: &str, class: Option<usize>, s: Scored, inline: bool, decode_seconds: f64, t0: Instant) -> crate::Result<serde_json::Value> {
    let entry = info.calibration.get(&class);
    let (defective, threshold) = info.is_defective(class, s.image_score).unzip();
    let ms = |x: f64| (x * 1e6).round() / 1e3;
    let mut v = json!({
        "name": name,
        "class": class,
        "category": class.and_then(|c| info.classes.get(c).cloned()),
        "image_score": s.image_score,
        "defective": defective,
        "threshold": threshold,
        "threshold_source": entry.map(|e| e.source),
        "map_min": s.map_min,
        "map_max": s.map_max,
        "display_range": [s.display_range.0, s.display_range.1],
        "normal_p999": entry.map(|e| e.calibration.normal_p999),
        "batch_size": s.batch_size,
        "timings_ms": { "decode": ms(decode_seconds), "queue": ms(s.queue_seconds), "model_batch": ms(s.model_seconds), "render": ms(s.render_seconds), "total": ms(t0.elapsed().as_secs_f64()) },
        "model_id": info.model_id,
        "calibration_id": info.calibration_id,
    });
    if inline {
        v["overlay_png_base64"] = json!(super::base64::encode(&s.overlay_png));
        v["heatmap_png_base64"] = json!(super::base64::encode(&s.heatmap_png));
    } else {
        let id = new_id()?;
        v["id"] = json!(id);
        v["overlay_url"] = json!(format!("/v1/results/{id}/overlay.png"));
        v["heatmap_url"] = json!(format!("/v1/results/{id}/heatmap.png"));
        st.store.insert(id, Pictures { overlay: s.overlay_png, heatmap: s.heatmap_png });
    }
    Ok(v)
}
