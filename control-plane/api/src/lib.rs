//! skiff-api: the Kubernetes API machinery of skiff's API server, without IO: which resources
//! exist and how they behave, and everything done to an object between the wire and the store.
#![forbid(unsafe_code)]

pub mod apply;
pub mod authz;
pub mod convert;
pub mod defaults;
pub mod extensions;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod registry;
pub mod selector;
pub mod table;
pub mod validation;
