//! skiff-api: the Kubernetes API machinery of skiff's API server, without IO: which resources
//! exist and how they behave, and everything done to an object between the wire and the store.
#![forbid(unsafe_code)]

pub mod authz;
pub mod convert;
pub mod registry;
