//! Basic authentication for the scrape endpoint, against the bcrypt hashes
//! of `basic_auth_users`.
//!
//! A bcrypt round costs tens of milliseconds by design, and the endpoint
//! shares its thread with the poll loop: rounds run on tokio's blocking
//! pool, one at a time (a flood of wrong passwords costs one core, not
//! all), and a password that passed is remembered (as an HMAC under a key
//! made at start, never in clear) so a scraper every 15 s pays one round,
//! not one per scrape, as the exporter toolkit does.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use hyper::header::HeaderValue;
use ring::hmac;

struct User {
    hash: String,
    /// The HMAC of the last password that matched `hash`.
    passed: Mutex<Option<hmac::Tag>>,
}

/// The users of one web configuration; reloading the file makes a new one.
pub(crate) struct BasicAuth {
    users: BTreeMap<String, User>,
    key: hmac::Key,
    /// One bcrypt round at a time.
    rounds: Mutex<()>,
}

/// `Authorization: Basic base64(user:password)`, decoded.
fn credentials(header: Option<&HeaderValue>) -> Option<(String, Vec<u8>)> {
    let value = header?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

impl BasicAuth {
    pub(crate) fn new(users: &BTreeMap<String, String>) -> Self {
        let users = users.iter().map(|(u, h)| (u.clone(), User { hash: h.clone(), passed: Mutex::new(None) })).collect();
        Self {
            users,
            key: hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new()).expect("the system's random numbers"),
            rounds: Mutex::new(()),
        }
    }

    /// Whether the request's `Authorization` header names a user and its
    /// password.
    pub(crate) async fn allows(self: &Arc<Self>, header: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = credentials(header) else { return false };
        if self.remembered(&user, &password) {
            return true;
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.verify(&user, &password)).await.unwrap_or(false)
    }

    /// A password that passed before: no bcrypt round. The comparison is
    /// constant-time (`hmac::verify`).
    fn remembered(&self, user: &str, password: &[u8]) -> bool {
        let Some(u) = self.users.get(user) else { return false };
        let passed = u.passed.lock().unwrap_or_else(|e| e.into_inner());
        passed.as_ref().is_some_and(|tag| hmac::verify(&self.key, password, tag.as_ref()).is_ok())
    }

    /// One bcrypt round; remembers the password when it matches.
    fn verify(&self, user: &str, password: &[u8]) -> bool {
        let known = self.users.get(user);
        // A user that does not exist costs a round against another's hash
        // (the same cost), so the time a refusal takes does not tell which
        // user names exist; the answer is no whatever it says.
        let Some(hash) = known.or_else(|| self.users.values().next()).map(|u| u.hash.as_str()) else { return false };
        let matches = {
            let _one_at_a_time = self.rounds.lock().unwrap_or_else(|e| e.into_inner());
            bcrypt::verify(password, hash).unwrap_or(false)
        };
        match known {
            Some(u) if matches => {
                *u.passed.lock().unwrap_or_else(|e| e.into_inner()) = Some(hmac::sign(&self.key, password));
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> HeaderValue {
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {b64}")).unwrap()
    }

    fn auth() -> Arc<BasicAuth> {
        let users = BTreeMap::from([("prometheus".to_owned(), bcrypt::hash("s3cret:with colon", 4).unwrap())]);
        Arc::new(BasicAuth::new(&users))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_right_password_passes_and_anything_else_does_not() {
        let a = auth();
        assert!(!a.remembered("prometheus", b"s3cret:with colon"), "nothing remembered before it passed");
        assert!(a.allows(Some(&header("prometheus", "s3cret:with colon"))).await);
        assert!(a.remembered("prometheus", b"s3cret:with colon"), "a password that passed is remembered");
        // Again, from memory: still right.
        assert!(a.allows(Some(&header("prometheus", "s3cret:with colon"))).await);
        assert!(!a.allows(Some(&header("prometheus", "s3cret"))).await, "a wrong password");
        assert!(!a.remembered("prometheus", b"s3cret"));
        assert!(!a.allows(Some(&header("grafana", "s3cret:with colon"))).await, "a user that does not exist");
        assert!(!a.allows(None).await, "no header");
        assert!(!a.allows(Some(&HeaderValue::from_static("Bearer abc"))).await, "another scheme");
        assert!(!a.allows(Some(&HeaderValue::from_static("Basic !!!"))).await, "not base64");
        // The user name is case-sensitive, the scheme is not.
        assert!(!a.allows(Some(&header("Prometheus", "s3cret:with colon"))).await);
        let lower = header("prometheus", "s3cret:with colon").to_str().unwrap().replace("Basic", "basic");
        assert!(a.allows(Some(&HeaderValue::from_str(&lower).unwrap())).await);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn another_users_password_does_not_pass_for_a_name_that_does_not_exist() {
        let a = auth();
        assert!(!a.allows(Some(&header("nobody", "s3cret:with colon"))).await);
    }
}
