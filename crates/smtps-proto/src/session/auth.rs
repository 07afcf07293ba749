//! SASL authentication (RFC 4954): the AUTH command and the PLAIN (RFC 4616) and LOGIN
//! exchanges. Decoded credentials stay in the session's `sasl` buffer only until the host
//! has decided.

use std::ops::Range;

use super::output::Ready;
use super::{AuthMechanism, Mode, PendingKind, Security, ServerSession};
use crate::base64;
use crate::config::{AuthMechanisms, Extensions};
use crate::reply::{Reply, ReplyCode};

const SASL_USERNAME_PROMPT: &str = "VXNlcm5hbWU6";
const SASL_PASSWORD_PROMPT: &str = "UGFzc3dvcmQ6";

impl ServerSession {
    pub(super) fn auth(
        &mut self,
        mechanism: Option<AuthMechanism>,
        initial_response: Option<&[u8]>,
    ) {
        let offered = self.config.auth_mechanisms;
        let refusal = if !self.config.extensions.contains(Extensions::AUTH) || offered.is_empty() {
            Some(Reply::fixed(502, (5, 5, 1), "AUTH not offered"))
        } else if self.helo != Some(true) {
            Some(Reply::fixed(503, (5, 5, 1), "Send EHLO first"))
        } else if self.security != Security::Tls && !self.config.policy.danger_allow_plaintext_auth
        {
            Some(Reply::fixed(
                538,
                (5, 7, 11),
                "Encryption required for requested authentication mechanism",
            ))
        } else if self.authenticated {
            Some(Reply::fixed(503, (5, 5, 1), "Already authenticated"))
        } else if self.txn.is_some() {
            Some(Reply::fixed(
                503,
                (5, 5, 1),
                "AUTH not permitted during a mail transaction",
            ))
        } else {
            None
        };
        if let Some(reply) = refusal {
            self.protocol_error(&reply);
            return;
        }
        let mechanism = mechanism.filter(|m| match m {
            AuthMechanism::Plain => offered.contains(AuthMechanisms::PLAIN),
            AuthMechanism::Login => offered.contains(AuthMechanisms::LOGIN),
        });
        match (mechanism, initial_response) {
            (None, _) => self.protocol_error(&Reply::fixed(
                504,
                (5, 5, 4),
                "Unrecognized authentication type",
            )),
            (Some(AuthMechanism::Plain), None) => {
                self.reply(&Reply::new(ReplyCode::AUTH_CHALLENGE, None, ""));
                self.mode = Mode::SaslPlain;
            }
            (Some(AuthMechanism::Plain), Some(response)) => self.finish_plain(response),
            (Some(AuthMechanism::Login), None) => {
                self.reply(&Reply::new(
                    ReplyCode::AUTH_CHALLENGE,
                    None,
                    SASL_USERNAME_PROMPT,
                ));
                self.mode = Mode::SaslLoginUser;
            }
            (Some(AuthMechanism::Login), Some(response)) => {
                self.mode = Mode::SaslLoginUser;
                self.login_user(response);
            }
        }
    }

    pub(super) fn sasl_plain(&mut self, line: Range<usize>) {
        self.mode = Mode::Commands;
        let response = self.input[line].to_vec();
        if !self.sasl_cancelled(&response) {
            self.finish_plain(&response);
        }
    }

    pub(super) fn sasl_login_user(&mut self, line: Range<usize>) {
        let response = self.input[line].to_vec();
        if !self.sasl_cancelled(&response) {
            self.login_user(&response);
        }
    }

    pub(super) fn sasl_login_password(&mut self, line: Range<usize>) {
        self.mode = Mode::Commands;
        let response = self.input[line].to_vec();
        if self.sasl_cancelled(&response) {
            return;
        }
        let user_len = self.sasl.len();
        let mut password = Vec::new();
        if decode_sasl(&response, &mut password).is_none()
            || std::str::from_utf8(&password).is_err()
        {
            password.fill(0);
            self.sasl_failed();
            return;
        }
        self.sasl.extend_from_slice(&password);
        password.fill(0);
        let id = self.await_decision(PendingKind::Auth);
        self.ready.push_back(Ready::Auth {
            id,
            mechanism: AuthMechanism::Login,
            authorization_id: 0..0,
            authentication_id: 0..user_len,
            password: user_len..self.sasl.len(),
        });
    }

    /// `*` cancels an exchange (RFC 4954 §4).
    fn sasl_cancelled(&mut self, response: &[u8]) -> bool {
        if response == b"*" {
            self.mode = Mode::Commands;
            self.wipe_sasl();
            self.protocol_error(&Reply::fixed(501, (5, 0, 0), "Authentication cancelled"));
            true
        } else {
            false
        }
    }

    fn login_user(&mut self, response: &[u8]) {
        let mut user = Vec::new();
        if decode_sasl(response, &mut user).is_none() || std::str::from_utf8(&user).is_err() {
            self.mode = Mode::Commands;
            self.sasl_failed();
            return;
        }
        self.wipe_sasl();
        self.sasl = user;
        self.reply(&Reply::new(
            ReplyCode::AUTH_CHALLENGE,
            None,
            SASL_PASSWORD_PROMPT,
        ));
        self.mode = Mode::SaslLoginPassword;
    }

    /// PLAIN: `[authzid] NUL authcid NUL passwd`, UTF-8 (RFC 4616 §2).
    fn finish_plain(&mut self, response: &[u8]) {
        self.wipe_sasl();
        let mut decoded = Vec::new();
        if decode_sasl(response, &mut decoded).is_none() {
            self.sasl_failed();
            return;
        }
        self.sasl = decoded;
        let mut parts = self.sasl.split(|&b| b == 0);
        let (Some(authz), Some(authc), Some(pass), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            self.sasl_failed();
            return;
        };
        let valid =
            std::str::from_utf8(&self.sasl).is_ok() && !authc.is_empty() && !pass.is_empty();
        let (authz_len, authc_len) = (authz.len(), authc.len());
        if !valid {
            self.sasl_failed();
            return;
        }
        let id = self.await_decision(PendingKind::Auth);
        self.ready.push_back(Ready::Auth {
            id,
            mechanism: AuthMechanism::Plain,
            authorization_id: 0..authz_len,
            authentication_id: authz_len + 1..authz_len + 1 + authc_len,
            password: authz_len + authc_len + 2..self.sasl.len(),
        });
    }

    fn sasl_failed(&mut self) {
        self.wipe_sasl();
        self.protocol_error(&Reply::fixed(
            501,
            (5, 5, 2),
            "Cannot decode SASL response (RFC 4954 §4)",
        ));
    }

    pub(super) fn wipe_sasl(&mut self) {
        // Credentials do not linger in memory longer than the decision needs them.
        self.sasl.fill(0);
        self.sasl.clear();
    }
}

pub(super) fn mechanism_named(name: &str) -> Option<AuthMechanism> {
    if name.eq_ignore_ascii_case("PLAIN") {
        Some(AuthMechanism::Plain)
    } else if name.eq_ignore_ascii_case("LOGIN") {
        Some(AuthMechanism::Login)
    } else {
        None
    }
}

/// Decodes a SASL response: base64, where `=` stands for an empty response (RFC 4954 §4).
fn decode_sasl(response: &[u8], out: &mut Vec<u8>) -> Option<()> {
    if response == b"=" {
        out.clear();
        return Some(());
    }
    base64::decode(response, out)
}
