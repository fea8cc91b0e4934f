//! HTTP servers: readiness and debug (8080), metrics (15014).

pub mod debug;
pub mod dump;
pub mod http;
pub mod monitoring;
