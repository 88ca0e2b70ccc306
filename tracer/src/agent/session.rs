//! Sessions of the agent's page: after the page has shown the bearer token
//! once (`POST /api/session`), a random session id in a cookie
//! (`HttpOnly; SameSite=Strict`) lets the browser open incident reports
//! as plain links, which cannot carry an `Authorization` header. A session
//! only reads: it is accepted on GET and HEAD, never on `POST /trace`.
//! Bounded: [`MAX_SESSIONS`] at once (the oldest goes first), each for
//! [`SESSION_LIFE`].

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// The cookie's name.
pub(super) const COOKIE: &str = "memtrace_session";
/// How long a session lasts.
pub(super) const SESSION_LIFE: Duration = Duration::from_secs(12 * 3600);
/// Sessions at once.
const MAX_SESSIONS: usize = 64;

#[derive(Default)]
pub(super) struct Sessions {
    /// Session id (32 hex digits) → when it ends.
    open: Mutex<HashMap<String, Instant>>,
}

impl Sessions {
    /// A new session, or None when the system has no randomness to give.
    pub(super) fn open(&self) -> Option<String> {
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw).ok()?;
        let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut open = self.open.lock().expect("sessions lock");
        open.retain(|_, ends| *ends > now);
        if open.len() >= MAX_SESSIONS {
            let oldest = open
                .iter()
                .min_by_key(|(_, ends)| **ends)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                open.remove(&oldest);
            }
        }
        open.insert(id.clone(), now + SESSION_LIFE);
        Some(id)
    }

    /// Whether a `Cookie` header's value holds a session that is open.
    pub(super) fn admits(&self, cookies: &str) -> bool {
        let open = self.open.lock().expect("sessions lock");
        cookies
            .split(';')
            .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
            .any(|id| open.get(id).is_some_and(|ends| *ends > Instant::now()))
    }

    /// The `Set-Cookie` value of a session.
    pub(super) fn cookie(id: &str) -> String {
        format!(
            "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
            SESSION_LIFE.as_secs()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_open_sessions_are_admitted_and_they_are_bounded() {
        let sessions = Sessions::default();
        let id = sessions.open().expect("randomness");
        assert_eq!(id.len(), 32);
        assert!(sessions.admits(&format!("a=b; {COOKIE}={id}")));
        assert!(!sessions.admits(&format!("{COOKIE}=0{}", &id[1..])));
        assert!(!sessions.admits(&format!("x{COOKIE}={id}")));
        assert!(!sessions.admits(""));
        for _ in 0..MAX_SESSIONS {
            sessions.open().unwrap();
        }
        assert_eq!(sessions.open.lock().unwrap().len(), MAX_SESSIONS);
        assert!(
            !sessions.admits(&format!("{COOKIE}={id}")),
            "the oldest went first"
        );
        assert_eq!(
            Sessions::cookie("ab"),
            "memtrace_session=ab; HttpOnly; SameSite=Strict; Path=/; Max-Age=43200"
        );
    }
}
