//! The scrape endpoint: HTTP/1.1 on tokio (hyper), `GET /metrics`.
//!
//! It runs on the same single-threaded runtime as the poll loop, so a
//! scrape never sees a half-updated snapshot. Connections are capped and
//! must send their request headers within a few seconds: a stuck or hostile
//! client cannot make a long-running qtrace grow.
//!
//! With `--web-config-file`, each connection goes through what the file
//! asks for (TLS, basic authentication, headers; see `access`).

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
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::access::{Access, WebConfigFile};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Scrapers are few; more connections than this wait for a free slot.
const MAX_CONNECTIONS: usize = 16;
/// For the request headers, and for the TLS handshake before them.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a connection is served, keep-alive included.
const CONNECTION_MAX: Duration = Duration::from_secs(60);

/// Whether the client asked for OpenMetrics (Prometheus does, first).
fn wants_openmetrics<B>(req: &Request<B>) -> bool {
    req.headers().get_all(ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|v| v.contains("application/openmetrics-text"))
}

pub(crate) fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
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

/// Serves `registry` on `listener` until the task is dropped, through
/// what `web` asks for (nothing without it).
pub(crate) async fn serve(listener: TcpListener, registry: Arc<Registry>, mut web: Option<WebConfigFile>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let open = Arc::new(Access::default());
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
        let access = match web.as_mut() {
            None => open.clone(),
            Some(file) => match file.current() {
                Some(access) => access,
                // Unusable now (said on stderr): the connection is closed.
                None => continue,
            },
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            connection(stream, access, registry).await;
            drop(permit);
        });
    }
}

/// One connection: the TLS handshake if there is TLS, then HTTP/1.1.
async fn connection(stream: TcpStream, access: Arc<Access>, registry: Arc<Registry>) {
    let Some(acceptor) = access.tls.clone() else {
        return http(stream, access, registry).await;
    };
    let handshake = async {
        if speaks_plain_http(&stream).await {
            refuse_plain_http(stream).await;
            return None;
        }
        acceptor.accept(stream).await.ok()
    };
    if let Ok(Some(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        http(tls, access, registry).await;
    }
}

async fn http<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(stream: S, access: Arc<Access>, registry: Arc<Registry>) {
    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
        let (access, registry) = (access.clone(), registry.clone());
        async move { Ok::<_, Infallible>(access.answer(&req, || respond(&req, &registry)).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .serve_connection(TokioIo::new(stream), svc);
    // However it is used, a connection ends after CONNECTION_MAX: one that
    // stops reading a response cannot keep its slot. Prometheus opens a
    // new one for its next scrape.
    let _ = tokio::time::timeout(CONNECTION_MAX, conn).await;
}

/// Whether a client of the TLS port began with a plain HTTP request (a
/// method's first letter) rather than a TLS record (0x16, a handshake).
async fn speaks_plain_http(stream: &TcpStream) -> bool {
    let mut first = [0u8; 1];
    matches!(stream.peek(&mut first).await, Ok(1) if first[0].is_ascii_uppercase())
}

/// What Go's servers (the exporters') answer there: a plain 400 that says
/// why, so `curl http://` shows the mistake instead of an empty reply.
/// No metrics.
async fn refuse_plain_http(mut stream: TcpStream) {
    // The request's head is read first (8 KiB at most, within the
    // handshake's time): closing a socket with unread data resets it, and
    // the client would miss the answer, or fail to send the rest.
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while head.len() < 8192 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
    let body = "Client sent an HTTP request to an HTTPS server.\n";
    let reply = format!(
        "HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
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

    #[tokio::test(flavor = "current_thread")]
    async fn a_plain_request_to_the_tls_port_gets_a_400_even_sent_in_pieces() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(b"GET /metrics ").await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            c.write_all(b"HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
            let mut out = String::new();
            c.read_to_string(&mut out).await.unwrap();
            out
        });
        let (s, _) = l.accept().await.unwrap();
        assert!(speaks_plain_http(&s).await);
        refuse_plain_http(s).await;
        let out = client.await.unwrap();
        assert!(
            out.starts_with("HTTP/1.0 400 Bad Request\r\n") && out.ends_with("\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"),
            "{out}"
        );
    }
}
