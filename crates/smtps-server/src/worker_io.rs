//! I/O a host runs on the worker threads themselves, beside the client connections: sockets
//! of its own (a backend MTA, a policy service) polled by the worker's own `epoll`, so that a
//! decision that waits on them costs no thread hand-off at all.
//!
//! A host that wants it returns a [`WorkerIo`] from [`Handler::worker_io`](crate::Handler::worker_io);
//! each worker makes one, holds it for its lifetime, reports the readiness of the sources it
//! registered through its [`WorkerRegistry`], and calls it when its deadline passes. The
//! host's decision methods reach the same worker's object through
//! [`Context::worker_io`](crate::Context::worker_io), on the same thread, so no lock is
//! needed: a decision is deferred, the command goes out on the host's socket in the same
//! turn, and the reply's readiness event answers the [`Responder`](crate::Responder) in a
//! later turn of the same loop.

use std::any::Any;
use std::io;
use std::time::Instant;

use mio::event::{Event, Source};
use mio::{Interest, Registry, Token};

/// The first poll token of host I/O: the worker's own tokens (listeners, connections, its
/// waker) stay below it or are `usize::MAX`.
pub(crate) const HOST_TOKEN_BASE: usize = 1 << 48;

/// The largest token a host may use (exclusive).
pub const MAX_HOST_TOKEN: usize = (usize::MAX - 1) - HOST_TOKEN_BASE;

/// One worker's host I/O: what it registered is reported here.
pub trait WorkerIo: Any + Send {
    /// A source registered with `token` is ready (mio edge-triggered semantics: read and
    /// write until `WouldBlock`).
    fn ready(&mut self, token: usize, event: &Event);

    /// The earliest time [`WorkerIo::expire`] must run, if any.
    fn next_deadline(&self) -> Option<Instant>;

    /// Called once the deadline passed.
    fn expire(&mut self, now: Instant);

    /// Called after the worker served a connection: its events handed to the handler, the
    /// answers due applied, or its end told ([`Handler::disconnect`](crate::Handler::disconnect)).
    /// The place to send what the handler's calls queued for this connection in one write
    /// (a MAIL, its RCPTs and DATA pipelined together) rather than one per call. Default:
    /// nothing.
    fn served(&mut self) {}

    /// For the host's decision methods to reach their own type
    /// ([`Context::worker_io`](crate::Context::worker_io)).
    fn as_any(&mut self) -> &mut dyn Any;
}

/// Registers a host's sources with its worker's poll, under tokens of the host's own
/// (`0..MAX_HOST_TOKEN`), which [`WorkerIo::ready`] gets back.
#[derive(Debug)]
pub struct WorkerRegistry {
    registry: Registry,
}

impl WorkerRegistry {
    pub(crate) fn new(registry: Registry) -> Self {
        Self { registry }
    }

    fn token(token: usize) -> io::Result<Token> {
        if token < MAX_HOST_TOKEN {
            Ok(Token(token + HOST_TOKEN_BASE))
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "host I/O token out of range",
            ))
        }
    }

    /// Registers `source` (`mio::Registry::register`).
    ///
    /// # Errors
    /// The token is out of range, or the poll refused the source.
    pub fn register<S: Source + ?Sized>(
        &self,
        source: &mut S,
        token: usize,
        interests: Interest,
    ) -> io::Result<()> {
        self.registry
            .register(source, Self::token(token)?, interests)
    }

    /// Removes `source` (`mio::Registry::deregister`); closing it does the same.
    ///
    /// # Errors
    /// The poll refused.
    pub fn deregister<S: Source + ?Sized>(&self, source: &mut S) -> io::Result<()> {
        self.registry.deregister(source)
    }
}
