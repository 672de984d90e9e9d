//! A small async client for the Sluice broker, over its gRPC API (`sluice.v1`).
//!
//! [`Client`] holds one HTTP/2 connection, shared by every call and cheap to clone. The typed
//! service clients ([`Client::admin`], [`Client::producer`], [`Client::consumer`]) expose the
//! whole protocol; the helpers here cover what most programs need: producing with each
//! record's position, reading a partition, and a consumer-group member ([`GroupMember`]).
//!
//! Every failure is a [`ClientError`]; a broker's refusal keeps its gRPC status and the stable
//! reason code the broker attaches (see [`ClientError::reason`]).
#![deny(unsafe_code)]
#![deny(clippy::unwrap_used)]
#![warn(clippy::expect_used)]
#![warn(missing_docs)]

mod client;
mod error;
mod group;
mod produce;

pub use client::{Client, ConnectOptions, Credentials, TlsOptions, Transport};
pub use error::{ClientError, Result};
pub use group::{GroupEvent, GroupMember};
pub use produce::{RecordPosition, positions};
/// The generated protocol types and service clients.
pub use sluice_proto::v1 as pb;
