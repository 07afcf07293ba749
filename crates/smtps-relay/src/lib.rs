//! A relay front on smtps: each client transaction is relayed in real time to a backend SMTP
//! server (an unmodified Postfix or Exim), which keeps its own policy and its own queue.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod auth;
pub mod backend;
mod backend_io;
pub mod body;
pub mod capabilities;
mod client;
pub mod logline;
pub mod params;
pub mod received;
pub mod relay;
pub mod reply;
pub mod xtext;
