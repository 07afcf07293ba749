//! What the `Handler` trait promises a host written from its documentation alone: AUTH is
//! advertised only by a host that checks credentials. Every blocking call has a timeout.
#![allow(clippy::unwrap_used, missing_docs)]

use std::net::SocketAddr;
use std::time::Duration;

use smtps_proto::{Reply, SessionConfig};
use smtps_server::{
    Answer, Context, Credentials, Handler, Mode, RunningServer, Server, ServerConfig,
};
use smtps_testkit::{SmtpClient, acceptor, client_config};

/// `alice` / `secret`, base64 of `\0alice\0secret` (RFC 4616).
const ALICE_PLAIN: &str = "AUTH PLAIN AGFsaWNlAHNlY3JldA==";

/// A host that takes every message and knows nothing of AUTH: it overrides neither
/// `offers_auth` nor `auth`.
struct NoAuth;

impl Handler for NoAuth {
    type Session = ();

    fn connect(&self, _cx: &mut Context<'_>) -> ((), Answer) {
        ((), Answer::Accept)
    }

    fn body_chunk(&self, _: &mut (), _: &mut Context<'_>, _: &[u8]) -> Result<(), Reply> {
        Ok(())
    }

    fn message_end(&self, _: &mut (), _: &mut Context<'_>, _: u64) -> Answer {
        Answer::Accept
    }
}

/// A host with a user table of one.
struct WithAuth;

impl Handler for WithAuth {
    type Session = ();

    fn connect(&self, _cx: &mut Context<'_>) -> ((), Answer) {
        ((), Answer::Accept)
    }

    fn offers_auth(&self) -> bool {
        true
    }

    fn auth(&self, _: &mut (), _: &mut Context<'_>, credentials: &Credentials<'_>) -> Answer {
        if credentials.authentication_id == "alice" && credentials.password == "secret" {
            Answer::Accept
        } else {
            Answer::Reject(Reply::from_parts(535, Some("5.7.8"), "Bad credentials").unwrap())
        }
    }

    fn body_chunk(&self, _: &mut (), _: &mut Context<'_>, _: &[u8]) -> Result<(), Reply> {
        Ok(())
    }

    fn message_end(&self, _: &mut (), _: &mut Context<'_>, _: u64) -> Answer {
        Answer::Accept
    }
}

/// A server with one implicit-TLS listener on 127.0.0.1, stopped on drop.
struct Running {
    server: Option<RunningServer>,
    addr: SocketAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.handle().shutdown(Duration::ZERO);
            let _ = server.join();
        }
    }
}

fn serve<H: Handler>(handler: H) -> Running {
    let mut config = ServerConfig::new(SessionConfig::new("mx.test"))
        .listener("127.0.0.1:0".parse().unwrap(), Mode::ImplicitTls)
        .tls(acceptor());
    config.workers = 1;
    let server = Server::bind(config, handler).unwrap();
    let addr = server.local_addrs()[0];
    Running {
        server: Some(server.start().unwrap()),
        addr,
    }
}

fn greeted(running: &Running) -> SmtpClient {
    let mut client = SmtpClient::connect_tls(running.addr, &client_config());
    assert!(client.reply().starts_with("220 mx.test"));
    client
}

#[test]
fn a_host_without_auth_advertises_no_auth_and_answers_502_rfc4954() {
    let running = serve(NoAuth);
    let mut client = greeted(&running);
    let ehlo = client.command("EHLO client.test");
    assert!(ehlo.starts_with("250-mx.test"), "{ehlo}");
    assert!(!ehlo.contains("AUTH"), "AUTH advertised: {ehlo}");
    let reply = client.command(ALICE_PLAIN);
    assert!(reply.starts_with("502 5.5.1"), "{reply}");
    // The session goes on: the refusal is a reply, not a close.
    assert!(client.command("NOOP").starts_with("250"));
}

#[test]
fn a_host_with_auth_advertises_its_mechanisms_and_checks_credentials_rfc4954() {
    let running = serve(WithAuth);
    let mut client = greeted(&running);
    let ehlo = client.command("EHLO client.test");
    assert!(ehlo.contains("AUTH PLAIN LOGIN\r\n"), "{ehlo}");
    let reply = client.command(ALICE_PLAIN);
    assert!(reply.starts_with("235"), "{reply}");
}
