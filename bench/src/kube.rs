//! The API servers `kube_load` and `churn_load` run `pilot-discovery` against: the fake
//! of the `kube-fake` crate serving [`resources`], or a real one ([`real_api`]), both
//! holding the objects of [`objects`]; how istiod is started on them is in [`istiod`].

pub mod istiod;
pub mod objects;
pub mod real_api;
pub mod resources;
