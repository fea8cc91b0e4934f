//! Load drivers for `pilot-discovery`: the parts the binaries in `src/bin/` share.
//!
//! - [`process`]: the server under test (free ports, readiness, memory and CPU sampling);
//! - [`ads`]: Envoy-like ADS clients, state of the world and delta, and push rounds;
//! - [`config_dir`]: the `--configDir` folder the file-mode drivers edit;
//! - [`kube`]: the Kubernetes API servers `kube_load` drives, fake and real.

pub mod ads;
pub mod config_dir;
pub mod kube;
pub mod process;
