//! The controllers against skiff's real API server (in process) and a fake kubelet, as one test
//! binary: one link instead of a dozen, and the harness compiled once.

mod common;

mod cronjob;
mod daemonset;
mod deployment;
mod endpoints;
mod gc;
mod harness;
mod hpa;
mod job;
mod namespaces;
mod nodelifecycle;
mod quiescence;
mod smoke;
mod statefulset;
