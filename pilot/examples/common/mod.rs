//! Parts shared by the load examples: the server process (start on free ports, readiness,
//! memory and CPU sampling) and Envoy-like ADS clients, state of the world and delta.
//!
//! Included by each example with `#[path = "common/mod.rs"] mod common;`; an example uses a
//! subset, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod ads;
pub mod delta;
pub mod process;
