//! A fake Kubernetes API server for tests and load drivers, and builders for the objects
//! they put in it.
//!
//! One in-memory store keyed by (collection, namespace, name) with one resource-version
//! counter, served either in-process ([`FakeApi::client`]: a `kube::Client` over the
//! server's axum `Router`, no socket) or over HTTP on an ephemeral port of 127.0.0.1
//! ([`FakeApi::serve`]). It answers
//!
//! - list (`limit`/`continue` paging, label and field selectors), get, create (`dryRun`
//!   stores nothing), update (resource-version conflicts), JSON merge patch and strategic
//!   merge patch (as a merge patch, but lists of named objects merge by name), delete;
//! - watch (`watch=true&resourceVersion=N`: newline-delimited JSON events streamed as they
//!   happen; `resourceVersion=0` or `sendInitialEvents=true` start with the current
//!   objects; BOOKMARKs with `allowWatchBookmarks`; ends after `timeoutSeconds`);
//! - the `status` and `ephemeralcontainers` subresources;
//! - TokenReview (authenticates no token unless a handler says otherwise).
//!
//! Every request is recorded ([`FakeApi::calls`], [`FakeApi::requests`]), and handlers
//! ([`FakeApi::on`]) may answer a request before the store does: a TokenReview that
//! authenticates, a webhook denying a dry run, an injected failure; or leave it
//! unanswered ([`FakeApi::stall`]), as a server that stopped responding.
//!
//! [`FakeApi::new`] serves any collection path; [`FakeApi::serving`] only the given
//! resource types, answering 404 for others as a server without their CRD does. Every
//! change is kept (no compaction), so a watch from any version resumes without a 410.

mod api;
mod error;
pub mod objects;
mod patch;
mod path;
mod select;
mod server;
mod store;
mod wait;

pub use api::{Call, FakeApi, Handler};
pub use error::{failure, ApiError};
pub use path::ResourceType;
pub use wait::eventually;

/// A client talking in-process to a new fake API server, and the server.
pub fn pair() -> (kube::Client, FakeApi) {
    let api = FakeApi::new();
    (api.client(), api)
}

#[cfg(test)]
mod tests;
