//! The page's way in. `shoal up` prints a one-time login link (and `shoal open` asks
//! for a fresh one); following it trades the link for a session cookie that a page
//! on another site can neither send (`SameSite=Strict`) nor read (`HttpOnly`), and
//! the link is spent, so the one left in the browser's history opens nothing. Each
//! change the page asks for carries the session's CSRF token as `X-CSRF-Token`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The session cookie's name.
pub(crate) const COOKIE: &str = "shoal_session";

/// How long a login link may wait to be followed.
pub const LINK_VALID: Duration = Duration::from_secs(600);

/// How many sessions are kept; the oldest goes first.
const SESSIONS_KEPT: usize = 64;

/// Login links not yet followed, and the sessions they became.
#[derive(Clone, Default)]
pub struct Logins {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    links: HashMap<String, Instant>,
    sessions: HashMap<String, String>,
    order: VecDeque<String>,
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    // The system's randomness failing is no reason to hand out a guessable token.
    getrandom::fill(&mut bytes).expect("the system's random source");
    hex::encode(bytes)
}

impl Logins {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new one-time login token, good for [`LINK_VALID`]: the page's address is
    /// `/login?token=TOKEN`.
    pub fn link(&self) -> String {
        let token = random_hex();
        let mut st = self.state();
        let now = Instant::now();
        st.links
            .retain(|_, made| now.duration_since(*made) < LINK_VALID);
        st.links.insert(token.clone(), now);
        token
    }

    /// Spends a login token: a new session's id, if the token was good.
    pub(crate) fn redeem(&self, token: &str) -> Option<String> {
        let mut st = self.state();
        let made = st.links.remove(token)?;
        if made.elapsed() >= LINK_VALID {
            return None;
        }
        let id = random_hex();
        st.sessions.insert(id.clone(), random_hex());
        st.order.push_back(id.clone());
        while st.order.len() > SESSIONS_KEPT {
            if let Some(old) = st.order.pop_front() {
                st.sessions.remove(&old);
            }
        }
        Some(id)
    }

    /// The CSRF token of session `id`, if it is one.
    pub(crate) fn csrf(&self, id: &str) -> Option<String> {
        self.state().sessions.get(id).cloned()
    }
}

/// The session cookie's value in `headers`, if any.
pub(crate) fn cookie(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_opens_one_session_once() {
        let logins = Logins::default();
        let token = logins.link();
        let session = logins.redeem(&token).expect("a session");
        assert!(logins.redeem(&token).is_none(), "a link is spent");
        assert!(logins.redeem("0".repeat(64).as_str()).is_none());
        let csrf = logins.csrf(&session).expect("a csrf token");
        assert_eq!(csrf.len(), 64);
        assert_ne!(csrf, session);
        assert!(logins.csrf("nope").is_none());
    }

    #[test]
    fn the_oldest_sessions_go_first() {
        let logins = Logins::default();
        let first = logins.redeem(&logins.link()).expect("first");
        for _ in 0..SESSIONS_KEPT {
            logins.redeem(&logins.link()).expect("another");
        }
        assert!(logins.csrf(&first).is_none());
    }
}
