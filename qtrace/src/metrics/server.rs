//! The scrape endpoint: HTTP/1.1 on tokio (hyper), `GET /metrics`.
//!
//! It runs on the same single-threaded runtime as the poll loop, so a
//! scrape never sees a half-updated snapshot. Connections are capped and
//! must send their request headers within a few seconds: a stuck or hostile
//! client cannot make a long-running qtrace grow.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ACCEPT, ALLOW, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Scrapers are few; more connections than this wait for a free slot.
const MAX_CONNECTIONS: usize = 16;

/// Whether the client asked for OpenMetrics (Prometheus does, first).
fn wants_openmetrics<B>(req: &Request<B>) -> bool {
    req.headers().get_all(ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|v| v.contains("application/openmetrics-text"))
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// Answers one request.
pub(crate) fn respond<B>(req: &Request<B>, registry: &Registry) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match req.uri().path() {
        "/metrics" => {
            let om = super::openmetrics(registry);
            let (body, ty) = if wants_openmetrics(req) { (om, OPENMETRICS) } else { (super::to_classic(&om), CLASSIC) };
            let mut r = Response::new(Full::new(Bytes::from(if req.method() == Method::HEAD { String::new() } else { body })));
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(ty));
            r
        }
        "/" => text(StatusCode::OK, "qtrace: TCP listen-queue overflows per port. Metrics: /metrics\n"),
        _ => text(StatusCode::NOT_FOUND, "not found; metrics are at /metrics\n"),
    }
}

/// Serves `registry` on `listener` until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of descriptors or a connection reset before accept: wait
            // a moment rather than spin; the next scrape retries anyway.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let r = respond(&req, &registry);
                async move { Ok::<_, Infallible>(r) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{registry, Snapshot};
    use std::sync::Mutex;

    fn req(method: Method, path: &str, accept: Option<&str>) -> Request<()> {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(a) = accept {
            b = b.header(ACCEPT, a);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn negotiates_the_format_and_rejects_other_paths_and_methods() {
        let reg = registry(Arc::new(Mutex::new(Snapshot { tier: "tracepoint".into(), ..Default::default() })));
        // What Prometheus 2.x sends.
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let r = respond(&req(Method::GET, "/metrics", Some(prom)), &reg);
        assert_eq!(r.headers()[CONTENT_TYPE], OPENMETRICS);
        let r = respond(&req(Method::GET, "/metrics", None), &reg);
        assert_eq!((r.status(), r.headers()[CONTENT_TYPE].to_str().unwrap()), (StatusCode::OK, CLASSIC));
        assert_eq!(respond(&req(Method::GET, "/nope", None), &reg).status(), StatusCode::NOT_FOUND);
        let r = respond(&req(Method::POST, "/metrics", None), &reg);
        assert_eq!((r.status(), r.headers()[ALLOW].to_str().unwrap()), (StatusCode::METHOD_NOT_ALLOWED, "GET, HEAD"));
    }
}
