//! Sidecar injection. So far the template engine the injector's templates run on;
//! istiod serves no `/inject` yet.

pub mod template;
