//! What a connection to the scrape endpoint must pass: TLS, basic
//! authentication and extra headers, as `--web-config-file` says, and that
//! file read again when it or a file it names changes.
//!
//! The exporter toolkit reads its file at every request, so renewed
//! certificates and changed passwords apply without a restart. qtrace does
//! the same, but only when something changed (each connection compares the
//! files' inode, size and modification time with the last read): rebuilding
//! TLS settings and forgetting remembered passwords at every scrape would
//! cost for nothing. A file that became invalid refuses connections (said
//! once on stderr) until it is fixed, as the toolkit does: a scrape that
//! fails is noticed, a weaker configuration kept silently would not be.
//! Switching between HTTP and HTTPS needs a restart (the scheme is what the
//! scrapers were told).

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONNECTION, WWW_AUTHENTICATE};
use hyper::{Request, Response, StatusCode};
use tokio_rustls::TlsAcceptor;

use super::basic_auth::BasicAuth;
use super::web_config::{WebConfig, WebConfigError};

/// The checks one connection goes through.
#[derive(Default)]
pub(crate) struct Access {
    pub(crate) tls: Option<TlsAcceptor>,
    auth: Option<Arc<BasicAuth>>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Access {
    fn build(config: &WebConfig) -> Result<Self, WebConfigError> {
        let tls = config.tls.as_ref().map(super::tls::server_config).transpose()?.map(TlsAcceptor::from);
        let auth = (!config.users.is_empty()).then(|| Arc::new(BasicAuth::new(&config.users)));
        let headers = config
            .headers
            .iter()
            .map(|(n, v)| Ok((HeaderName::try_from(n.as_str())?, HeaderValue::try_from(v.as_str())?)))
            .collect::<Result<_, Box<dyn std::error::Error>>>()
            .map_err(|e| WebConfigError::Invalid { key: "http_server_config.headers", why: e.to_string() })?;
        Ok(Self { tls, auth, headers })
    }

    /// The answer to `req`: `answer`'s, or 401 without the right
    /// credentials; with the configured headers either way.
    pub(crate) async fn answer<B>(&self, req: &Request<B>, answer: impl FnOnce() -> Response<Full<Bytes>>) -> Response<Full<Bytes>> {
        let allowed = match &self.auth {
            Some(auth) => auth.allows(req.headers().get(AUTHORIZATION)).await,
            None => true,
        };
        let mut r = if allowed {
            answer()
        } else {
            let mut r = super::server::text(StatusCode::UNAUTHORIZED, "401 Unauthorized\n");
            r.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"qtrace\""));
            // A client without the password gets no kept-alive connection
            // to try more on: the slots are few (`server::MAX_CONNECTIONS`).
            r.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
            r
        };
        for (n, v) in &self.headers {
            r.headers_mut().insert(n.clone(), v.clone());
        }
        r
    }
}

/// A file's identity and version, or none when it cannot be read.
type Stamp = Option<(u64, u64, u64, i64, i64)>;

fn stamp(path: &Path) -> Stamp {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// `--web-config-file`, as last read.
pub struct WebConfigFile {
    path: PathBuf,
    tls: bool,
    /// Whether it asks for a password: fixed at start, like `tls`.
    auth: bool,
    /// The file and the files it named, as they were when read.
    stamps: Vec<(PathBuf, Stamp)>,
    state: Result<Arc<Access>, String>,
}

impl WebConfigFile {
    /// Reads it at start: an error here stops qtrace.
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let (access, stamps) = Self::read(path)?;
        let (tls, auth) = (access.tls.is_some(), access.auth.is_some());
        Ok(Self { path: path.to_owned(), tls, auth, stamps, state: Ok(Arc::new(access)) })
    }

    fn read(path: &Path) -> Result<(Access, Vec<(PathBuf, Stamp)>), WebConfigError> {
        let before = stamp(path);
        let config = WebConfig::load(path)?;
        // A file rewritten in place (`>` in a shell, an editor) can be read
        // half-written: an empty or cut-off `basic_auth_users` would read
        // as "no password". What changed while it was read is not taken.
        if stamp(path) != before {
            return Err(WebConfigError::ChangedWhileRead);
        }
        let mut stamps = vec![(path.to_owned(), before)];
        stamps.extend(config.files().into_iter().map(|f| (f.to_owned(), stamp(f))));
        Ok((Access::build(&config)?, stamps))
    }

    /// What a read at run time found, refused where it would change how
    /// the endpoint is protected: that takes a restart, so a mistaken or
    /// half-written file can never open the metrics to everyone.
    fn reread(&self) -> Result<(Access, Vec<(PathBuf, Stamp)>), String> {
        let (access, stamps) = Self::read(&self.path).map_err(|e| e.to_string())?;
        if access.tls.is_some() != self.tls {
            return Err("tls_server_config was added or removed; restart qtrace to switch between HTTP and HTTPS".to_owned());
        }
        if access.auth.is_some() != self.auth {
            return Err("basic_auth_users was added or removed; restart qtrace to turn passwords on or off".to_owned());
        }
        Ok((access, stamps))
    }

    /// Whether it serves HTTPS, and asks for a password: for the line that
    /// says where the metrics are.
    pub fn describe(&self) -> (bool, bool) {
        (self.tls, self.auth)
    }

    /// The checks for a new connection, the file read again if it changed;
    /// `None` refuses the connection (the file became unusable).
    pub(crate) fn current(&mut self) -> Option<Arc<Access>> {
        let changed = self.stamps.iter().any(|(p, s)| stamp(p) != *s);
        if changed || self.state.is_err() {
            let state = self.reread().map(|(access, stamps)| {
                self.stamps = stamps;
                Arc::new(access)
            });
            match (&state, &self.state) {
                (Err(new), Err(old)) if new == old => {}
                (Err(e), _) => eprintln!("qtrace: --web-config-file {}: {e}; refusing scrapes until it is fixed", self.path.display()),
                (Ok(_), Err(_)) => eprintln!("qtrace: --web-config-file {}: fixed, serving scrapes again", self.path.display()),
                (Ok(_), Ok(_)) => {}
            }
            self.state = state;
        }
        self.state.as_ref().ok().cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn scratch(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("qtrace-access-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    /// Replaces a file as rotations do (a new file renamed over it): a new
    /// inode, whatever the clock's resolution and the sizes.
    fn replace(path: &Path, text: &str) {
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    fn users(list: &[(&str, &str)]) -> String {
        let mut s = "basic_auth_users:\n".to_owned();
        for (u, p) in list {
            s += &format!("  {u}: {}\n", bcrypt::hash(p, 4).unwrap());
        }
        s
    }

    fn basic(user: &str, password: &str) -> Request<()> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Request::builder().header(AUTHORIZATION, format!("Basic {b64}")).body(()).unwrap()
    }

    async fn status(access: &Access, req: &Request<()>) -> StatusCode {
        access.answer(req, || super::super::server::text(StatusCode::OK, "ok")).await.status()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn refuses_without_the_password_and_adds_the_headers() {
        let dir = scratch("auth");
        let path = dir.0.join("web.yml");
        std::fs::write(&path, users(&[("prom", "pw")]) + "http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n").unwrap();
        let mut file = WebConfigFile::load(&path).unwrap();
        assert_eq!(file.describe(), (false, true));
        let access = file.current().unwrap();
        let r = access.answer(&Request::new(()), || super::super::server::text(StatusCode::OK, "ok")).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[WWW_AUTHENTICATE], "Basic realm=\"qtrace\"");
        assert_eq!(r.headers()[CONNECTION], "close", "no kept-alive connection to guess on");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert_eq!(status(&access, &basic("prom", "wrong")).await, StatusCode::UNAUTHORIZED);
        assert_eq!(status(&access, &basic("prom", "pw")).await, StatusCode::OK);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_changed_file_applies_to_the_next_connection_and_a_broken_one_refuses() {
        let dir = scratch("reload");
        let path = dir.0.join("web.yml");
        std::fs::write(&path, users(&[("prom", "old")])).unwrap();
        let mut file = WebConfigFile::load(&path).unwrap();
        let first = file.current().unwrap();
        assert!(Arc::ptr_eq(&first, &file.current().unwrap()), "unchanged: the same settings, passwords remembered");
        replace(&path, &users(&[("prom", "new")]));
        let second = file.current().unwrap();
        assert_eq!(status(&second, &basic("prom", "old")).await, StatusCode::UNAUTHORIZED);
        assert_eq!(status(&second, &basic("prom", "new")).await, StatusCode::OK);
        replace(&path, "basic_auth_users:\n  prom: not-a-hash\n");
        assert!(file.current().is_none(), "a broken file refuses connections");
        assert!(file.current().is_none());
        replace(&path, &users(&[("prom", "fixed")]));
        assert!(file.current().is_some(), "and serves again once fixed");
        // HTTP to HTTPS needs a restart.
        let (_, cert, key) = crate::metrics::tls::tests::ca_and_server();
        std::fs::write(dir.0.join("c.pem"), cert).unwrap();
        std::fs::write(dir.0.join("k.pem"), key).unwrap();
        replace(&path, "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n");
        assert!(file.current().is_none());
        assert!(WebConfigFile::load(&path).unwrap().describe().0, "relative to the file's directory");
    }

    /// An emptied file (`: > web.yml`, an editor halfway through) reads
    /// as valid YAML with no users: it must refuse, not serve everyone.
    #[tokio::test(flavor = "current_thread")]
    async fn a_file_that_drops_the_passwords_refuses_until_restart() {
        let dir = scratch("emptied");
        let path = dir.0.join("web.yml");
        std::fs::write(&path, users(&[("prom", "pw")])).unwrap();
        let mut file = WebConfigFile::load(&path).unwrap();
        assert!(file.current().is_some());
        std::fs::write(&path, "").unwrap();
        assert!(file.current().is_none(), "no password is no reason to serve everyone");
        replace(&path, "http_server_config:\n  headers:\n    X-Frame-Options: deny\n");
        assert!(file.current().is_none(), "nor is a file that never had one");
        replace(&path, &users(&[("prom", "pw")]));
        let access = file.current().expect("the passwords back: served again");
        assert_eq!(status(&access, &Request::new(())).await, StatusCode::UNAUTHORIZED);
        assert_eq!(file.describe(), (false, true));
    }

    #[test]
    fn a_certificate_that_changes_is_read_again() {
        let dir = scratch("rotate");
        let path = dir.0.join("web.yml");
        let (_, cert, key) = crate::metrics::tls::tests::ca_and_server();
        std::fs::write(dir.0.join("c.pem"), &cert).unwrap();
        std::fs::write(dir.0.join("k.pem"), &key).unwrap();
        std::fs::write(&path, "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n").unwrap();
        let mut file = WebConfigFile::load(&path).unwrap();
        let first = file.current().unwrap();
        // A key that does not go with the certificate: refused, not kept.
        let (_, cert2, key2) = crate::metrics::tls::tests::ca_and_server();
        replace(&dir.0.join("c.pem"), &cert2);
        assert!(file.current().is_none());
        replace(&dir.0.join("k.pem"), &key2);
        let second = file.current().unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
    }
}
