//! The metrics endpoint against a real Prometheus server (Debian's
//! `prometheus` package, installed by `cargo xtask test`) and its linter
//! (`promtool`), over TLS with basic authentication (`--web-config-file`),
//! and a soak run with listener churn. Root only, host only:
//! the guests of the kernel matrix have no Prometheus.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    addr, connect, connect_nonblocking, free_port, http_get, listener, port, promtool_accepts, sample, settle, unsupported, url_encode,
    NetNs, Qtrace,
};
use rustls::pki_types::pem::PemObject as _;
use serde_json::Value;
use socket2::Socket;

const SETTLE: Duration = Duration::from_millis(1500);

/// A Prometheus server scraping one target every second, in a scratch
/// directory; killed and removed with the guard.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    addr: String,
}

impl Prometheus {
    fn start(target: &str) -> Self {
        Self::with_jobs(&format!("  - job_name: qtrace\n    static_configs:\n      - targets: ['{target}']\n"))
    }

    /// With these `scrape_configs` entries (YAML, indented as list items).
    fn with_jobs(jobs: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("qtrace-prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let config = format!("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n{jobs}");
        std::fs::write(dir.join("prometheus.yml"), config).expect("config written");
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("log")).expect("log file"))
            .spawn()
            .expect("prometheus starts (Debian package prometheus)");
        let p = Self { child, dir, addr };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(&p.addr).is_err() || http_get(&p.addr, "/-/ready", None).0 != 200 {
            assert!(Instant::now() < deadline, "prometheus never became ready: {}", p.log());
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// An instant query's samples through the HTTP API.
    fn query(&self, promql: &str) -> Vec<Value> {
        let (status, _, body) = http_get(&self.addr, &format!("/api/v1/query?query={}", url_encode(promql)), None);
        assert_eq!(status, 200, "{promql}: {body}");
        let v: Value = serde_json::from_str(&body).expect("API answers JSON");
        assert_eq!(v["status"], "success", "{body}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The value of a query that yields one sample.
    fn value(&self, promql: &str) -> Option<f64> {
        let r = self.query(promql);
        r.first().and_then(|s| s["value"][1].as_str()).and_then(|v| v.parse().ok())
    }

    /// The value of `series` once it is `want`, or the last one seen
    /// after 60 s.
    fn settled_on(&self, series: &str, want: f64) -> Option<f64> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = None;
        while Instant::now() < deadline {
            seen = self.value(series);
            if seen == Some(want) {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        seen
    }

    /// A job's target as /api/v1/targets shows it, once it has been
    /// scraped (60 s at most).
    fn target(&self, job: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, _, body) = http_get(&self.addr, "/api/v1/targets?state=active", None);
            assert_eq!(status, 200, "{body}");
            let v: Value = serde_json::from_str(&body).expect("API answers JSON");
            let targets = v["data"]["activeTargets"].as_array().cloned().unwrap_or_default();
            if let Some(t) = targets.into_iter().find(|t| t["labels"]["job"] == job && t["health"] != "unknown") {
                return t;
            }
            assert!(Instant::now() < deadline, "job {job} never scraped: {body}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A listener with backlog 2 that never accepts, and 40 clients: the SYN
/// and accept queues overflow. Returns the listener (close it to end).
fn overflow(ns: &NetNs, p: u16) -> (Socket, Vec<Socket>) {
    let srv = ns.run(|| listener(addr("127.0.0.1", p), 2));
    let clients: Vec<Socket> = ns.run(|| (0..40).map(|_| connect_nonblocking(addr("127.0.0.1", p))).collect());
    (srv, clients)
}

/// [`overflow`], the clients' SYNs retransmitted once, then closed: returns
/// the listener and the namespace's `ListenDrops` growth once it settled.
fn overflow_counted(ns: &NetNs, p: u16) -> (Socket, u64) {
    let before = ns.counters();
    let (srv, clients) = overflow(ns, p);
    std::thread::sleep(Duration::from_millis(2500));
    drop(clients);
    let after = settle(SETTLE, || ns.counters().get("ListenDrops"));
    let kernel = after - before.get("ListenDrops");
    assert!(kernel >= 40, "the burst should overflow (ListenDrops +{kernel})");
    (srv, kernel)
}

/// Every query of the Grafana dashboard (deploy/grafana/qtrace.json), its
/// variables set to "all" as Grafana sends them, runs on the real
/// Prometheus scraping qtrace, and the per-port drops panel shows port
/// `p`: a query Prometheus refuses is an empty panel nobody notices.
fn the_dashboard_s_queries_run(prom: &Prometheus, p: u16) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/grafana/qtrace.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("the dashboard")).expect("JSON");
    let vars = [("$instance", ".*"), ("$namespace", ".*"), ("$port", ".*"), ("$job", ".*"), ("$__rate_interval", "1m"), ("$__range", "5m")];
    let mut exprs = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().expect("expr").to_owned());
        }
    }
    for var in dash["templating"]["list"].as_array().into_iter().flatten() {
        // `label_values(SELECTOR, LABEL)` is Grafana's: its selector is the query.
        if let Some(q) = var["query"]["query"].as_str().and_then(|q| q.strip_prefix("label_values(")?.rsplit_once(',')) {
            exprs.push(q.0.to_owned());
        }
    }
    for e in &exprs {
        let q = vars.iter().fold(e.clone(), |q, (var, value)| q.replace(var, value));
        assert!(!q.contains('$'), "an unknown dashboard variable in {e}");
        // `query` asserts that Prometheus answered with success.
        prom.query(&q);
    }
    let by_port = exprs
        .iter()
        .find(|e| e.starts_with("sum by (instance, namespace, pod, netns, port) (rate(qtrace_drops_total"))
        .expect("the per-port panel");
    let q = vars.iter().fold(by_port.clone(), |q, (var, value)| q.replace(var, value));
    // A rate takes two samples of the series: a few more scrapes.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ports: Vec<String> = prom.query(&q).iter().filter_map(|s| s["metric"]["port"].as_str().map(str::to_owned)).collect();
        if ports.contains(&p.to_string()) {
            break;
        }
        assert!(Instant::now() < deadline, "{q}: {ports:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every alerting rule of deploy/prometheus/alerts.yml, by alert name and
/// expression (each written on one line).
fn alert_rules() -> Vec<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/prometheus/alerts.yml");
    let text = std::fs::read_to_string(path).expect("the alert rules");
    let mut rules = Vec::new();
    let mut alert = None;
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- alert: ") {
            alert = Some(name.to_owned());
        } else if let Some(expr) = line.strip_prefix("expr: ") {
            rules.push((alert.clone().expect("an alert before its expr"), expr.to_owned()));
        }
    }
    assert!(rules.len() >= 5, "{rules:?}");
    rules
}

/// Every alert's expression runs on the real Prometheus scraping qtrace:
/// `promtool check rules` parses them, but only a server finds a
/// misspelt function argument or a vector matching that cannot work.
fn the_alert_rules_run(prom: &Prometheus) {
    for (alert, expr) in alert_rules() {
        // `query` asserts that Prometheus answered with success.
        let _ = prom.query(&expr);
        eprintln!("alert {alert}: its expression runs");
    }
}

/// The acceptance test: Prometheus scrapes qtrace until the
/// counter for the port equals the namespace's `ListenDrops` delta.
#[test]
fn prometheus_scrapes_the_kernel_delta() {
    let ns = NetNs::new(&[]);
    let p = port();
    let q = Qtrace::watch(&["--netns", &ns.name, "--metrics-addr", "127.0.0.1:0", "--json"]);
    let target = q.metrics_addr();
    let prom = Prometheus::start(&target);
    let (srv, kernel) = overflow_counted(&ns, p);

    let series = format!("qtrace_drops_total{{job=\"qtrace\",port=\"{p}\"}}");
    let seen = prom.settled_on(&series, kernel as f64);
    assert_eq!(seen, Some(kernel as f64), "Prometheus's {series} vs the ListenDrops delta; prometheus log: {}", prom.log());
    // The scrape itself is healthy, and the info metrics name the tier.
    assert_eq!(prom.value("up{job=\"qtrace\"}"), Some(1.0));
    let tier = prom.query("qtrace_hook_tier_info");
    assert_eq!(tier.len(), 1);
    assert_eq!(tier[0]["metric"]["tier"], q.tier.as_str());
    // Per kind, the series add up to the same total.
    let by_kind = prom.value(&format!("sum(qtrace_overflows_total{{port=\"{p}\",kind!~\"syncookie_sent|listener_discard\"}})"));
    assert_eq!(by_kind, Some(kernel as f64), "sum over kinds");
    // The listener is still open: its queue gauges exist, at its bound of 2.
    assert_eq!(prom.value(&format!("qtrace_accept_queue_max{{port=\"{p}\"}}")), Some(2.0));
    // The test process holds the listener: its pid owns the port.
    let owners = prom.query(&format!("qtrace_listener_info{{port=\"{p}\"}}"));
    assert_eq!(owners.len(), 1, "one owner: {owners:?}");
    assert_eq!(owners[0]["metric"]["pid"], std::process::id().to_string(), "{owners:?}");
    // Prometheus negotiated OpenMetrics; the classic format passes promtool's linter.
    let (status, head, body) = http_get(&target, "/metrics", None);
    assert_eq!(status, 200);
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
    promtool_accepts(&body);
    let (_, head, om) = http_get(&target, "/metrics", Some("application/openmetrics-text;version=1.0.0"));
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(om.ends_with("# EOF\n"));
    assert_eq!(sample(&om, &format!("qtrace_drops_total{{netns=\"{}\",port=\"{p}\"}}", ns.inode())), Some(kernel as f64));
    the_dashboard_s_queries_run(&prom, p);
    the_alert_rules_run(&prom);
    drop(srv);
    let done = q.stop(libc::SIGINT);
    assert!(done.status.success(), "{:?}", done.stderr);
}

/// The samples of `promql` that name port `p`, once there are some (a
/// rate takes two scrapes of a series; 30 s at most).
fn for_port(prom: &Prometheus, promql: &str, p: u16) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found: Vec<Value> = prom.query(promql).into_iter().filter(|s| s["metric"]["port"].as_str() == Some(&*p.to_string())).collect();
        if !found.is_empty() || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `n` clients that connect (the handshake completes: they are queued),
/// the first `leave` of them closing again at once, and after `wait` the
/// server accepts all `n` connections. Returns the clients that stayed.
fn accept_late(ns: &NetNs, srv: &Socket, p: u16, (n, leave): (usize, usize), wait: Duration) -> Vec<Socket> {
    let mut clients: Vec<Socket> = ns.run(|| (0..n).map(|_| connect(addr("127.0.0.1", p))).collect());
    drop(clients.drain(..leave));
    std::thread::sleep(wait);
    for _ in 0..n {
        srv.accept().expect("accept");
    }
    clients
}

/// A server that accepts each connection 1.5 s after it arrived: the
/// histogram counts every accept, the dashboard's p99 panel and the wait
/// alert's expression find the port (waits over a second, no drops), and
/// the connections served for nobody are counted: one whose client left
/// before its accept, and those still queued when the listener closed.
#[test]
fn prometheus_sees_accept_waits() {
    let ns = NetNs::new(&[]);
    let p = port();
    let q = Qtrace::watch(&["--netns", &ns.name, "--metrics-addr", "127.0.0.1:0", "--json"]);
    if let Some(limit) = q.limit("accept_wait_missing") {
        unsupported("prometheus_sees_accept_waits", "accept-queue waits", &limit.to_string());
        return;
    }
    let prom = Prometheus::start(&q.metrics_addr());
    let srv = ns.run(|| listener(addr("127.0.0.1", p), 64));
    // The first round makes the series; its first client leaves (FIN)
    // while queued and is accepted anyway. A rate needs growth after the
    // first scrape: a second round.
    let wait = Duration::from_millis(1500);
    let first = accept_late(&ns, &srv, p, (5, 1), wait);
    drop(first);
    let count = format!("qtrace_accept_wait_seconds_count{{job=\"qtrace\",port=\"{p}\"}}");
    assert_eq!(prom.settled_on(&count, 5.0), Some(5.0), "{}", prom.log());
    std::thread::sleep(Duration::from_secs(2));
    let _second = accept_late(&ns, &srv, p, (5, 0), wait);
    assert_eq!(prom.settled_on(&count, 10.0), Some(10.0), "{}", prom.log());
    the_wait_panel_and_alert_show(&prom, p);
    // Every arrival was accepted, all from the one listener, this process.
    for series in ["qtrace_arrivals_total", "qtrace_accepts_total"] {
        assert_eq!(prom.settled_on(&format!("{series}{{port=\"{p}\"}}"), 10.0), Some(10.0), "{series}");
    }
    let mine = format!("qtrace_listener_accepts_total{{port=\"{p}\",pid=\"{}\"}}", std::process::id());
    assert_eq!(prom.settled_on(&mine, 10.0), Some(10.0), "{}", prom.log());

    // Three connections still queued when the listener closes are reset.
    let _queued: Vec<Socket> = ns.run(|| (0..3).map(|_| connect(addr("127.0.0.1", p))).collect());
    std::thread::sleep(Duration::from_millis(300));
    drop(srv);
    let reset = format!("qtrace_reset_listener_closed_total{{port=\"{p}\"}}");
    assert_eq!(prom.settled_on(&reset, 3.0), Some(3.0), "{}", prom.log());
    // The three reset in the queue arrived all the same.
    assert_eq!(prom.settled_on(&format!("qtrace_arrivals_total{{port=\"{p}\"}}"), 13.0), Some(13.0), "{}", prom.log());
    let done = q.stop(libc::SIGINT);
    assert!(done.status.success(), "{:?}", done.stderr);
}

/// The dashboard's p99 panel shows port `p` waiting 1 to 2.2 s (its waits
/// of about 1.5 s fall in the bucket up to 2^31 ns), and the wait alert's
/// expression fires for it.
fn the_wait_panel_and_alert_show(prom: &Prometheus, p: u16) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/grafana/qtrace.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("the dashboard")).expect("JSON");
    let panel =
        dash["panels"].as_array().expect("panels").iter().find(|p| p["title"] == "p99 accept-queue wait by port").expect("the panel");
    let expr = panel["targets"][0]["expr"].as_str().expect("expr");
    let q = [("$instance", ".*"), ("$namespace", ".*"), ("$port", ".*"), ("$__rate_interval", "1m")]
        .iter()
        .fold(expr.to_owned(), |q, (var, v)| q.replace(var, v));
    let p99 = for_port(prom, &q, p);
    let seconds: f64 = p99.first().and_then(|s| s["value"][1].as_str()?.parse().ok()).unwrap_or_else(|| panic!("{q}: {p99:?}"));
    assert!((1.0..=2.2).contains(&seconds), "p99 {seconds} s: {p99:?}");
    let (_, alert) = alert_rules().into_iter().find(|(name, _)| name == "AcceptQueueWaitHigh").expect("the wait alert");
    assert_eq!(for_port(prom, &alert, p).len(), 1, "{alert}");
    // With the client that left, one connection was served for nobody.
    assert_eq!(prom.value(&format!("qtrace_accepted_client_gone_total{{port=\"{p}\"}}")), Some(1.0));
}

/// A CA, the server certificate it signed for `qtrace.test`, its key, and
/// a web configuration naming them relative to its own directory, with
/// one user whose password is `password`.
struct WebConfig {
    dir: PathBuf,
    file: PathBuf,
    ca: String,
}

impl WebConfig {
    fn new(password: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("qtrace-web-config-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key).expect("CA certificate").pem();
        let issuer = rcgen::Issuer::new(params, &ca_key);
        let key = rcgen::KeyPair::generate().expect("server key");
        let cert = rcgen::CertificateParams::new(vec!["qtrace.test".to_owned()]).expect("params").signed_by(&key, &issuer).expect("signed");
        std::fs::write(dir.join("ca.pem"), &ca).expect("written");
        std::fs::write(dir.join("server.pem"), cert.pem()).expect("written");
        std::fs::write(dir.join("server.key"), key.serialize_pem()).expect("written");
        let w = Self { file: dir.join("web-config.yml"), dir, ca };
        w.set_password(password);
        w
    }

    /// Writes the file (a new one renamed over it, as rotations do) with
    /// `password` for user prometheus.
    fn set_password(&self, password: &str) {
        let hash = bcrypt::hash(password, 10).expect("bcrypt hash");
        let text = format!(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\nbasic_auth_users:\n  prometheus: {hash}\nhttp_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n"
        );
        std::fs::write(self.dir.join("new.yml"), text).expect("written");
        std::fs::rename(self.dir.join("new.yml"), &self.file).expect("renamed");
    }

    /// A scrape job for qtrace at `target` over TLS, as `username` with
    /// `password` (none: no credentials).
    fn job(&self, name: &str, target: &str, login: Option<(&str, &str)>) -> String {
        let auth = login.map(|(u, p)| format!("    basic_auth:\n      username: {u}\n      password: '{p}'\n")).unwrap_or_default();
        format!(
            "  - job_name: {name}\n    scheme: https\n    tls_config:\n      ca_file: {}\n      server_name: qtrace.test\n{auth}    static_configs:\n      - targets: ['{target}']\n",
            self.dir.join("ca.pem").display()
        )
    }

    /// `GET /metrics` over TLS, trusting only the test's CA: (status, head, body).
    fn get(&self, target: &str, login: Option<(&str, &str)>) -> (u16, String, String) {
        use std::io::{Read as _, Write as _};
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(self.ca.as_bytes()) {
            roots.add(cert.expect("CA PEM")).expect("CA added");
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let conn = rustls::ClientConnection::new(Arc::new(config), "qtrace.test".try_into().expect("name")).expect("TLS client");
        let tcp = std::net::TcpStream::connect(target).expect("connects");
        tcp.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let auth = login.map(|(u, p)| format!("Authorization: Basic {}\r\n", base64(&format!("{u}:{p}")))).unwrap_or_default();
        write!(tls, "GET /metrics HTTP/1.1\r\nHost: qtrace.test\r\n{auth}Connection: close\r\n\r\n").expect("request sent");
        let mut raw = Vec::new();
        // The answer ends with the connection, with or without close_notify.
        let _ = tls.read_to_end(&mut raw);
        let raw = String::from_utf8_lossy(&raw);
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        (status, head.to_owned(), body.to_owned())
    }
}

impl Drop for WebConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Standard base64, for a Basic authorization header.
fn base64(s: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    s.as_bytes()
        .chunks(3)
        .flat_map(|c| {
            let n = (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
            (0..4).map(move |i| if i <= c.len() { A[((n >> (18 - 6 * i)) & 63) as usize] as char } else { '=' })
        })
        .collect()
}

/// The endpoint behind `--web-config-file`: Prometheus scrapes it over TLS
/// with basic auth and gets the kernel's delta; a wrong password, no
/// password and plain HTTP get no metrics, from Prometheus and directly;
/// a changed password applies to the next connection.
#[test]
fn prometheus_scrapes_over_tls_with_basic_auth() {
    let ns = NetNs::new(&[]);
    let p = port();
    let web = WebConfig::new("right password");
    let file = web.file.to_str().expect("UTF-8 path");
    let q = Qtrace::watch(&["--netns", &ns.name, "--metrics-addr", "127.0.0.1:0", "--web-config-file", file, "--json"]);
    let target = q.metrics_addr();
    let jobs = [
        web.job("qtrace", &target, Some(("prometheus", "right password"))),
        web.job("wrong", &target, Some(("prometheus", "wrong password"))),
        web.job("anonymous", &target, None),
        format!("  - job_name: plain\n    static_configs:\n      - targets: ['{target}']\n"),
    ];
    let prom = Prometheus::with_jobs(&jobs.concat());
    let (srv, kernel) = overflow_counted(&ns, p);

    let series = format!("qtrace_drops_total{{job=\"qtrace\",port=\"{p}\"}}");
    let seen = prom.settled_on(&series, kernel as f64);
    assert_eq!(seen, Some(kernel as f64), "Prometheus's {series} over TLS vs the ListenDrops delta; prometheus log: {}", prom.log());
    assert_eq!(prom.value("up{job=\"qtrace\"}"), Some(1.0));
    for (job, why) in [("wrong", "401 Unauthorized"), ("anonymous", "401 Unauthorized"), ("plain", "400 Bad Request")] {
        let t = prom.target(job);
        assert_eq!(t["health"], "down", "{job}: {t}");
        assert!(t["lastError"].as_str().unwrap_or_default().contains(why), "{job}: {why} expected: {t}");
        assert_eq!(prom.value(&format!("up{{job=\"{job}\"}}")), Some(0.0), "{job}");
        assert!(prom.query(&format!("qtrace_drops_total{{job=\"{job}\"}}")).is_empty(), "{job} got metrics");
    }

    // Directly: the right password gets the metrics and the configured header.
    let (status, head, body) = web.get(&target, Some(("prometheus", "right password")));
    assert_eq!(status, 200, "{head}");
    assert!(head.to_ascii_lowercase().contains("x-content-type-options: nosniff"), "{head}");
    assert_eq!(sample(&body, &format!("qtrace_drops_total{{netns=\"{}\",port=\"{p}\"}}", ns.inode())), Some(kernel as f64));
    for login in [Some(("prometheus", "wrong password")), Some(("nobody", "right password")), None] {
        let (status, head, body) = web.get(&target, login);
        assert_eq!(status, 401, "{login:?}: {head}");
        assert!(head.contains("www-authenticate: Basic realm=\"qtrace\""), "{head}");
        assert!(!body.contains("qtrace_"), "{login:?}: {body}");
    }
    // Plain HTTP: the answer Go's exporters give, and no metrics.
    let (status, _, body) = http_get(&target, "/metrics", None);
    assert_eq!((status, body.as_str()), (400, "Client sent an HTTP request to an HTTPS server.\n"));

    // A new password applies to the next connection, without a restart.
    web.set_password("new password");
    assert_eq!(web.get(&target, Some(("prometheus", "right password"))).0, 401);
    assert_eq!(web.get(&target, Some(("prometheus", "new password"))).0, 200);
    drop(srv);
    let done = q.stop(libc::SIGINT);
    assert!(done.status.success(), "{:?}", done.stderr);
    // The start record says how the endpoint is protected.
    assert_eq!(done.start["metrics_url"], format!("https://{target}/metrics"), "{}", done.start);
    assert_eq!(done.start["metrics_basic_auth"], true, "{}", done.start);
}

/// What cannot be used stops qtrace before it attaches anything: status
/// 2 and one line that names the problem, never a panic.
#[test]
fn an_unusable_web_config_is_a_usage_error() {
    let web = WebConfig::new("pw");
    let file = web.file.to_str().expect("UTF-8 path").to_owned();
    let bad = web.dir.join("bad.yml");
    let bad = bad.to_str().expect("UTF-8 path");
    let cases: Vec<(String, Vec<&str>, &str)> = vec![
        ("no --metrics-addr".into(), vec!["--web-config-file", &file], "it needs --metrics-addr"),
        (
            "no file".into(),
            vec!["--metrics-addr", "127.0.0.1:0", "--web-config-file", "/nonexistent/web.yml"],
            "cannot read /nonexistent/web.yml",
        ),
        ("unknown key".into(), vec!["--metrics-addr", "127.0.0.1:0", "--web-config-file", bad], "unknown field `tls_cofnig`"),
        (
            "bad hash".into(),
            vec!["--metrics-addr", "127.0.0.1:0", "--web-config-file", bad],
            "basic_auth_users: prometheus: not a bcrypt hash",
        ),
        ("missing key".into(), vec!["--metrics-addr", "127.0.0.1:0", "--web-config-file", bad], "tls_server_config.key_file: cannot read"),
    ];
    let texts = [
        "",
        "",
        "tls_cofnig:\n  cert_file: server.pem\n",
        "basic_auth_users:\n  prometheus: hunter2\n",
        "tls_server_config:\n  cert_file: server.pem\n  key_file: gone.key\n",
    ];
    for ((what, args, want), text) in cases.iter().zip(texts) {
        std::fs::write(bad, text).expect("written");
        let out = Command::new(common::bin()).args(["watch", "--json"]).args(args).output().expect("qtrace runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{what}: one line: {stderr}");
        assert!(stderr.contains(want) && !stderr.contains("panicked"), "{what}: {want:?} expected: {stderr}");
        assert!(out.stdout.is_empty(), "{what}: nothing attached, no start record");
    }
}

/// Resident set of a process, from /proc.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.split_whitespace().next()?.parse().ok()).expect("VmRSS")
}

/// Listener churn for a bounded time: every round opens listeners on fresh
/// ports, overflows each, closes them. With `--expire 3`, closed ports'
/// series go; a listener kept open keeps its series; and every drop the
/// kernel counted is in the live series or in the expired totals. Prints
/// qtrace's resident memory over the run.
#[test]
fn soak_with_listener_churn() {
    let ns = NetNs::new(&[]);
    let out = std::env::temp_dir().join(format!("qtrace-soak-{}.ndjson", std::process::id()));
    let _ = std::fs::remove_file(&out);
    let q = Qtrace::watch(&[
        "--netns",
        &ns.name,
        "--metrics-addr",
        "127.0.0.1:0",
        "--json",
        "--output",
        out.to_str().unwrap(),
        "--expire",
        "3",
    ]);
    let target = q.metrics_addr();
    let before = ns.counters();
    // One listener stays for the whole run, overflowed once at the start.
    let kept_port = port();
    let (kept, kept_clients) = overflow(&ns, kept_port);
    let rounds: u16 = std::env::var("QTRACE_SOAK_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(120);
    let per_round: u16 = 20;
    // Below the ephemeral range (32768+), so no client takes one of them.
    let base = 10_000 + (std::process::id() % 12) as u16 * 800;
    let start = Instant::now();
    let mut rss = vec![(0.0, rss_kib(q.pid()))];
    for round in 0..rounds {
        // Half the listeners reopen on the same ports every round; the
        // other half are on ports never used before.
        let listeners: Vec<(Socket, Vec<Socket>)> = (0..per_round)
            .map(|i| if i < per_round / 2 { base + i } else { base + 100 + round * per_round / 2 + i - per_round / 2 })
            .map(|p| overflow(&ns, p))
            .collect();
        std::thread::sleep(Duration::from_millis(700));
        drop(listeners);
        if round % 5 == 4 {
            rss.push((start.elapsed().as_secs_f64(), rss_kib(q.pid())));
        }
    }
    drop(kept_clients);
    // Past the expiry of the last round's ports, and settled.
    let after = settle(SETTLE, || ns.counters().get("ListenDrops"));
    let kernel = after - before.get("ListenDrops");
    std::thread::sleep(Duration::from_secs(5));
    let (_, _, om) = http_get(&target, "/metrics", Some("application/openmetrics-text"));
    rss.push((start.elapsed().as_secs_f64(), rss_kib(q.pid())));

    let netns = ns.inode();
    let live: Vec<&str> = om.lines().filter(|l| l.starts_with("qtrace_drops_total{")).collect();
    assert_eq!(live.len(), 1, "only the open listener keeps series:\n{om}");
    assert!(live[0].contains(&format!("port=\"{kept_port}\"")), "{live:?}");
    assert_eq!(sample(&om, "qtrace_tracked_ports"), Some(1.0));
    let kept_drops = sample(&om, &format!("qtrace_drops_total{{netns=\"{netns}\",port=\"{kept_port}\"}}")).unwrap();
    let expired = sample(&om, "qtrace_expired_drops_total").unwrap();
    assert_eq!(kept_drops + expired, kernel as f64, "live + expired drops vs the ListenDrops delta");
    let expired_ports = sample(&om, "qtrace_expired_ports_total").unwrap();
    assert!(expired_ports >= f64::from(rounds * per_round) / 4.0, "churned ports expired: {expired_ports}");
    assert_eq!(sample(&om, "qtrace_losses_total{reason=\"counter_map_full\"}"), Some(0.0));
    drop(kept);
    let done = q.stop(libc::SIGTERM);
    assert!(done.status.success(), "{:?}", done.stderr);
    // The NDJSON file has an expired record per expired port.
    let text = std::fs::read_to_string(&out).expect("output file");
    let _ = std::fs::remove_file(&out);
    let expired_records = text.lines().filter(|l| l.contains("\"type\":\"expired\"")).count();
    assert_eq!(expired_records as f64, expired_ports, "one expired record per expired port");

    let first = rss[1].1;
    let last = rss.last().unwrap().1;
    let max = rss.iter().map(|r| r.1).max().unwrap();
    let report: Vec<String> = rss.iter().map(|(t, kib)| format!("{t:.0}s {:.1}", *kib as f64 / 1024.0)).collect();
    let line = format!(
        "soak: {rounds} rounds x {per_round} listeners, {kernel} drops (live + expired = ListenDrops), {expired_ports} ports expired; qtrace RSS MiB over time: {}\n",
        report.join(", ")
    );
    eprint!("{line}");
    // Kept for the test run's report (cargo xtask test prints it).
    let _ = std::fs::write(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("soak-report.txt"), &line);
    // Flat, not a leak: the figures above are the report. A leak of even one
    // kilobyte per churned port would show as 1.2 MiB here.
    assert!(last <= first + 2048, "RSS grew from {first} KiB to {last} KiB (max {max} KiB)");
}

/// Final ACKs that overflow with `tcp_abort_on_overflow=1`: Prometheus
/// sees one `reset` outcome per client that got ECONNRESET, and the
/// families with outcomes pass promtool's linter.
#[test]
fn prometheus_sees_connection_outcomes() {
    let ns = NetNs::new(&["net.ipv4.tcp_syncookies=0", "net.ipv4.tcp_abort_on_overflow=1"]);
    let p = port();
    let q = Qtrace::watch(&["--netns", &ns.name, "--metrics-addr", "127.0.0.1:0", "--json"]);
    if let Some(limit) = q.limit("ack_detail_missing") {
        unsupported("prometheus_sees_connection_outcomes", "outcomes of ACK-stage overflows", &limit.to_string());
        return;
    }
    let prom = Prometheus::start(&q.metrics_addr());
    let s = common::ack_scenario(&ns, addr("127.0.0.1", p));
    std::thread::sleep(Duration::from_millis(500));
    let reset = s.clients.iter().filter(|c| common::was_reset(c)).count();
    assert_eq!(reset, 3, "three clients were reset");
    let series = format!("qtrace_connection_outcomes_total{{port=\"{p}\",outcome=\"reset\"}}");
    assert_eq!(prom.settled_on(&series, reset as f64), Some(reset as f64), "{}", prom.log());
    let (status, _, body) = http_get(&q.metrics_addr(), "/metrics", None);
    assert_eq!(status, 200);
    assert!(body.contains("qtrace_connection_outcomes_total{"), "{body}");
    promtool_accepts(&body);
    let done = q.stop(libc::SIGINT);
    assert!(done.status.success(), "{:?}", done.stderr);
}
