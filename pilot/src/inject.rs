//! Sidecar injection. So far: the injector's configuration ([`config`]), the label
//! selectors it uses ([`selector`]) and the template engine its templates run on
//! ([`template`]); istiod serves no `/inject` yet.

pub mod config;
pub mod selector;
pub mod template;
