//! The API servers `kube_load` runs `pilot-discovery` against: an in-process fake
//! ([`fake_api`]) or a real one ([`real_api`]), both holding the objects of [`objects`].

pub mod fake_api;
pub mod objects;
pub mod real_api;
