//! `--web-config-file`: the web configuration file Prometheus exporters
//! share (exporter-toolkit's `docs/web-configuration.md`), so the file an
//! operator already writes for node_exporter works for qtrace too: TLS
//! (`tls_server_config`), basic authentication (`basic_auth_users`, bcrypt
//! hashes) and extra response headers (`http_server_config.headers`).
//!
//! What qtrace does not implement is refused with the key's name rather
//! than ignored: a file that asks for client-certificate SAN checks or a
//! rate limit must not quietly get less protection than it says.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why a web configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// Not YAML, or a key the format does not have.
    #[error("{0}")]
    Syntax(String),
    /// A key whose value qtrace cannot use, or that it does not implement.
    #[error("{key}: {why}")]
    Invalid { key: &'static str, why: String },
    /// Rewritten while qtrace read it.
    #[error("the file changed while it was read")]
    ChangedWhileRead,
}

fn invalid(key: &'static str, why: impl Into<String>) -> WebConfigError {
    WebConfigError::Invalid { key, why: why.into() }
}

/// PEM text: in a file, or written into the configuration itself.
#[derive(Debug, Clone, PartialEq)]
pub enum Pem {
    File(PathBuf),
    Inline(String),
}

/// `client_auth_type`: the values that verify what they accept.
/// `RequestClientCert` and `RequireAnyClientCert` take any certificate
/// without checking it, which protects nothing; qtrace refuses them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClientAuth {
    NoClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    pub cert: Pem,
    pub key: Pem,
    pub client_auth: ClientAuth,
    pub client_ca: Option<Pem>,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
}

/// A checked web configuration, with relative paths resolved against the
/// file's directory (as the toolkit does). The files it names are read
/// when the TLS settings are built, not here.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WebConfig {
    pub tls: Option<TlsConfig>,
    /// User name to bcrypt hash; empty: no authentication.
    pub users: BTreeMap<String, String>,
    /// Added to every response.
    pub headers: Vec<(String, String)>,
}

impl WebConfig {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| WebConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, path.parent().unwrap_or(Path::new(".")))
    }

    /// Checks a file's text; `dir` is where relative paths start.
    pub fn parse(text: &str, dir: &Path) -> Result<Self, WebConfigError> {
        // An empty file (or one of comments) asks for nothing, as in the toolkit.
        if text.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
            return Ok(Self::default());
        }
        let file: File = serde_norway::from_str(text).map_err(|e| WebConfigError::Syntax(e.to_string()))?;
        if file.rate_limit.is_some() {
            return Err(invalid("rate_limit", "not supported by qtrace; remove it"));
        }
        let tls = file.tls_server_config.map(|t| t.check(dir)).transpose()?.flatten();
        let headers = file.http_server_config.map(HttpFile::check).transpose()?.unwrap_or_default();
        let users = file.basic_auth_users.unwrap_or_default();
        for (user, hash) in &users {
            check_hash(user, hash)?;
        }
        Ok(Self { tls, users, headers })
    }

    /// The files it names, whose change makes it worth reading again.
    pub fn files(&self) -> Vec<&Path> {
        let Some(t) = &self.tls else { return Vec::new() };
        [Some(&t.cert), Some(&t.key), t.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|p| match p {
                Pem::File(f) => Some(f.as_path()),
                Pem::Inline(_) => None,
            })
            .collect()
    }
}

/// The file as written. Keys of the toolkit's format that qtrace does not
/// implement are read (so they can be named) and refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsFile>,
    http_server_config: Option<HttpFile>,
    basic_auth_users: Option<BTreeMap<String, String>>,
    rate_limit: Option<Unsupported>,
}

/// A key that is recognised and refused, whatever its value.
#[derive(Deserialize)]
struct Unsupported(#[allow(dead_code, reason = "only its presence matters")] serde_norway::Value);

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: Option<String>,
    key_file: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    client_ca: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
    client_allowed_sans: Option<Unsupported>,
    cipher_suites: Option<Unsupported>,
    prefer_server_cipher_suites: Option<Unsupported>,
    curve_preferences: Option<Unsupported>,
}

/// One PEM from a `*_file` key or its inline twin; both is an error.
fn pem(dir: &Path, file: Option<String>, inline: Option<String>, key: &'static str) -> Result<Option<Pem>, WebConfigError> {
    match (file.filter(|f| !f.is_empty()), inline.filter(|i| !i.is_empty())) {
        (Some(_), Some(_)) => Err(invalid(key, "give the file or the inline PEM, not both")),
        (Some(f), None) => Ok(Some(Pem::File(dir.join(f)))),
        (None, Some(i)) => Ok(Some(Pem::Inline(i))),
        (None, None) => Ok(None),
    }
}

fn version(key: &'static str, v: Option<String>, default: TlsVersion) -> Result<TlsVersion, WebConfigError> {
    match v.as_deref() {
        None | Some("") => Ok(default),
        Some("TLS12") => Ok(TlsVersion::Tls12),
        Some("TLS13") => Ok(TlsVersion::Tls13),
        Some("TLS10" | "TLS11") => Err(invalid(key, "only TLS12 and TLS13 are supported")),
        Some(other) => Err(invalid(key, format!("{other:?} is not a TLS version (TLS12, TLS13)"))),
    }
}

impl TlsFile {
    /// `None`: the section sets nothing, which the toolkit reads as plain HTTP.
    fn check(self, dir: &Path) -> Result<Option<TlsConfig>, WebConfigError> {
        let refused = [
            ("tls_server_config.client_allowed_sans", self.client_allowed_sans.is_some()),
            ("tls_server_config.cipher_suites", self.cipher_suites.is_some()),
            ("tls_server_config.prefer_server_cipher_suites", self.prefer_server_cipher_suites.is_some()),
            ("tls_server_config.curve_preferences", self.curve_preferences.is_some()),
        ];
        if let Some((key, _)) = refused.into_iter().find(|(_, set)| *set) {
            return Err(invalid(key, "not supported by qtrace (rustls chooses suites and curves); remove it"));
        }
        let cert = pem(dir, self.cert_file, self.cert, "tls_server_config.cert_file")?;
        let key = pem(dir, self.key_file, self.key, "tls_server_config.key_file")?;
        let client_ca = pem(dir, self.client_ca_file, self.client_ca, "tls_server_config.client_ca_file")?;
        let client_auth = match self.client_auth_type.as_deref() {
            None | Some("" | "NoClientCert") => ClientAuth::NoClientCert,
            Some("VerifyClientCertIfGiven") => ClientAuth::VerifyClientCertIfGiven,
            Some("RequireAndVerifyClientCert") => ClientAuth::RequireAndVerifyClientCert,
            Some(other @ ("RequestClientCert" | "RequireAnyClientCert")) => {
                return Err(invalid(
                    "tls_server_config.client_auth_type",
                    format!("{other} accepts unverified certificates; not supported"),
                ))
            }
            Some(other) => return Err(invalid("tls_server_config.client_auth_type", format!("unknown value {other:?}"))),
        };
        let (min, max) = (self.min_version, self.max_version);
        if cert.is_none()
            && key.is_none()
            && client_ca.is_none()
            && client_auth == ClientAuth::NoClientCert
            && min.is_none()
            && max.is_none()
        {
            return Ok(None);
        }
        let cert = cert.ok_or_else(|| invalid("tls_server_config.cert_file", "missing: TLS needs a certificate"))?;
        let key = key.ok_or_else(|| invalid("tls_server_config.key_file", "missing: TLS needs the certificate's key"))?;
        match (client_auth, &client_ca) {
            (ClientAuth::NoClientCert, Some(_)) => {
                return Err(invalid("tls_server_config.client_ca_file", "set, but client_auth_type does not verify client certificates"))
            }
            (ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert, None) => {
                return Err(invalid(
                    "tls_server_config.client_ca_file",
                    "missing: client_auth_type verifies client certificates against it",
                ))
            }
            _ => {}
        }
        let min_version = version("tls_server_config.min_version", min, TlsVersion::Tls12)?;
        let max_version = version("tls_server_config.max_version", max, TlsVersion::Tls13)?;
        if min_version > max_version {
            return Err(invalid("tls_server_config.min_version", "above max_version"));
        }
        Ok(Some(TlsConfig { cert, key, client_auth, client_ca, min_version, max_version }))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

/// The headers the toolkit allows, and the values it allows for some.
const HEADERS: [(&str, &[&str]); 5] = [
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

impl HttpFile {
    fn check(self) -> Result<Vec<(String, String)>, WebConfigError> {
        if self.http2 == Some(true) {
            return Err(invalid("http_server_config.http2", "qtrace serves HTTP/1.1 only; set it to false or remove it"));
        }
        let mut out = Vec::new();
        for (name, value) in self.headers.unwrap_or_default() {
            let Some((_, allowed)) = HEADERS.iter().find(|(h, _)| h.eq_ignore_ascii_case(&name)) else {
                return Err(invalid("http_server_config.headers", format!("{name} cannot be set")));
            };
            if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
                return Err(invalid("http_server_config.headers", format!("{name}: {value:?} is not one of {allowed:?}")));
            }
            // A value that is not a valid header value would fail each response.
            if value.is_empty() || value.bytes().any(|b| b < 0x20 || b == 0x7f) {
                return Err(invalid("http_server_config.headers", format!("{name}: not a valid header value")));
            }
            out.push((name, value));
        }
        Ok(out)
    }
}

/// A user's hash must be one bcrypt can check: caught at start, not as a
/// 401 for every scrape.
fn check_hash(user: &str, hash: &str) -> Result<(), WebConfigError> {
    if user.is_empty() || user.contains(':') {
        return Err(invalid("basic_auth_users", format!("{user:?} is not a valid user name (empty, or has a colon)")));
    }
    hash.parse::<bcrypt::HashParts>().map(drop).map_err(|e| {
        invalid("basic_auth_users", format!("{user}: not a bcrypt hash ({e}); make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bcrypt hash of "secret" at the lowest cost.
    const HASH: &str = "$2y$04$CgEXZnkm7Ksd4ThBn5aGG.ygxXL4xo/.6yRHgWaCcEPqKnsyHqR5G";

    fn parse(text: &str) -> Result<WebConfig, WebConfigError> {
        WebConfig::parse(text, Path::new("/etc/qtrace"))
    }

    fn error(text: &str) -> String {
        parse(text).expect_err(text).to_string()
    }

    #[test]
    fn reads_tls_and_users_with_paths_beside_the_file() {
        let c = parse(&format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: /abs/server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  min_version: TLS13\nbasic_auth_users:\n  prometheus: {HASH}\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n"
        ))
        .unwrap();
        let tls = c.tls.as_ref().unwrap();
        assert_eq!(tls.cert, Pem::File("/etc/qtrace/server.crt".into()));
        assert_eq!(tls.key, Pem::File("/abs/server.key".into()));
        assert_eq!(tls.client_ca, Some(Pem::File("/etc/qtrace/ca.crt".into())));
        assert_eq!(
            (tls.client_auth, tls.min_version, tls.max_version),
            (ClientAuth::RequireAndVerifyClientCert, TlsVersion::Tls13, TlsVersion::Tls13)
        );
        assert_eq!(c.users.get("prometheus").map(String::as_str), Some(HASH));
        assert_eq!(c.headers, vec![("X-Frame-Options".to_owned(), "deny".to_owned())]);
        assert_eq!(c.files(), vec![Path::new("/etc/qtrace/server.crt"), Path::new("/abs/server.key"), Path::new("/etc/qtrace/ca.crt")]);
    }

    #[test]
    fn either_half_alone_and_nothing_at_all() {
        let auth_only = parse(&format!("basic_auth_users:\n  a: {HASH}\n")).unwrap();
        assert!(auth_only.tls.is_none() && auth_only.users.len() == 1);
        let tls_only = parse("tls_server_config:\n  cert: \"-----BEGIN CERTIFICATE-----\"\n  key_file: k.pem\n").unwrap();
        assert!(matches!(tls_only.tls.unwrap().cert, Pem::Inline(_)));
        assert_eq!(parse("# nothing yet\n").unwrap(), WebConfig::default());
        // As in the toolkit, a section that sets nothing is plain HTTP.
        assert_eq!(parse("tls_server_config:\n").unwrap(), WebConfig::default());
    }

    #[test]
    fn each_bad_file_names_its_problem() {
        let cases: &[(&str, &str)] = &[
            ("tls_server_config:\n  cert_file: a\n", "tls_server_config.key_file: missing"),
            ("tls_server_config:\n  key_file: a\n", "tls_server_config.cert_file: missing"),
            (
                "tls_server_config:\n  cert_file: a\n  cert: b\n  key_file: k\n",
                "tls_server_config.cert_file: give the file or the inline PEM",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n",
                "client_ca_file: missing",
            ),
            ("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_ca_file: c\n", "client_ca_file: set, but"),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAnyClientCert\n",
                "RequireAnyClientCert accepts unverified",
            ),
            ("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: Maybe\n", "client_auth_type: unknown value \"Maybe\""),
            ("tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS10\n", "min_version: only TLS12 and TLS13"),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS13\n  max_version: TLS12\n",
                "min_version: above max_version",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
                "tls_server_config.cipher_suites: not supported",
            ),
            ("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_allowed_sans: [x]\n", "client_allowed_sans: not supported"),
            ("tls_server_config:\n  cert_fiel: a\n", "unknown field `cert_fiel`"),
            ("tls_config:\n  cert_file: a\n", "unknown field `tls_config`"),
            ("rate_limit:\n  interval: 1s\n  burst: 2\n", "rate_limit: not supported"),
            ("http_server_config:\n  http2: true\n", "http_server_config.http2: qtrace serves HTTP/1.1 only"),
            ("http_server_config:\n  headers:\n    Server: x\n", "headers: Server cannot be set"),
            ("http_server_config:\n  headers:\n    X-Frame-Options: allow\n", "X-Frame-Options: \"allow\" is not one of"),
            ("basic_auth_users:\n  prometheus: secret\n", "basic_auth_users: prometheus: not a bcrypt hash"),
            ("basic_auth_users:\n  \"a:b\": x\n", "not a valid user name"),
            ("basic_auth_users: [a, b]\n", "basic_auth_users: invalid type"),
            ("tls_server_config: {cert_file: \"a\n", "found unexpected end of stream"),
            ("tls_server_config: [a]\n", "invalid type: sequence"),
        ];
        for (text, want) in cases {
            let got = error(text);
            assert!(got.contains(want), "{text:?}: {got:?} should contain {want:?}");
            assert!(!got.contains('\n'), "one line: {got:?}");
        }
    }

    #[test]
    fn rate_limit_is_refused_by_name() {
        assert_eq!(error("rate_limit: {interval: 1s, burst: 1}\n"), "rate_limit: not supported by qtrace; remove it");
    }

    #[test]
    fn an_unreadable_file_names_its_path() {
        let e = WebConfig::load(Path::new("/nonexistent/web.yml")).unwrap_err().to_string();
        assert!(e.starts_with("cannot read /nonexistent/web.yml: "), "{e}");
    }
}
