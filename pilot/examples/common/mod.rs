//! Parts shared by the load examples: the server process (start on free ports, readiness,
//! memory and CPU sampling) and an Envoy-like ADS client.
//!
//! Included by each example with `#[path = "common/mod.rs"] mod common;`; an example uses a
//! subset, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod ads;
pub mod process;
