//! The API servers `kube_load` runs `pilot-discovery` against: the fake of the `kube-fake`
//! crate serving [`resources`], or a real one ([`real_api`]), both holding the objects of
//! [`objects`].

pub mod objects;
pub mod real_api;
pub mod resources;
