//! AUTH at the front (RFC 4954): credentials checked off the worker thread, the user then known
//! to the session (and, when relaying, to the backend through XCLIENT LOGIN).

use std::sync::Arc;

use smtps_proto::{EnhancedStatus, Reply, ReplyCode};
use smtps_server::{Answer, Context, Credentials};

/// Checks AUTH credentials.
pub trait Authenticator: Send + Sync + 'static {
    /// Whether `password` is `user`'s. May take time (a password hash): it runs on a thread
    /// of its own, never on a worker.
    fn verify(&self, user: &str, password: &[u8]) -> bool;
}

/// `535 5.7.8`.
#[must_use]
pub fn auth_failed() -> Reply {
    Reply::new(
        ReplyCode::AUTH_INVALID,
        EnhancedStatus::new(5, 7, 8),
        "Authentication credentials invalid",
    )
}

/// Answers AUTH for a handler: refused without an authenticator, or for an authorization
/// identity other than the user's own (no rules for acting as another user, RFC 4616 §2);
/// otherwise deferred and verified on a thread of its own, then `235` or `535 5.7.8`.
pub fn authenticate(
    authenticator: Option<&Arc<dyn Authenticator>>,
    cx: &mut Context<'_>,
    credentials: &Credentials<'_>,
) -> Answer {
    let Some(authenticator) = authenticator else {
        return Answer::Reject(auth_failed());
    };
    if !credentials.authorization_id.is_empty()
        && credentials.authorization_id != credentials.authentication_id
    {
        log::warn!(
            "smtps: {:?} asked to act as {:?}: refused",
            credentials.authentication_id,
            credentials.authorization_id
        );
        return Answer::Reject(auth_failed());
    }
    let Some(responder) = cx.defer() else {
        return Answer::Reject(auth_failed());
    };
    let authenticator = Arc::clone(authenticator);
    let user = credentials.authentication_id.to_owned();
    let password = credentials.password.as_bytes().to_vec();
    let spawned = std::thread::Builder::new()
        .name("smtps-auth".into())
        .spawn(move || {
            if authenticator.verify(&user, &password) {
                responder.accept();
            } else {
                log::warn!("smtps: authentication failed for {user:?}");
                responder.reject(auth_failed());
            }
        });
    if let Err(error) = spawned {
        // The responder went down with the closure: it answers 451 by itself.
        log::error!("smtps: cannot start an authentication thread: {error}");
    }
    Answer::Deferred
}
