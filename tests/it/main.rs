//! Integration tests: the real `breakwater` binary against real upstreams on

// A panic in a test is a failed assertion; helpers may unwrap too.
#![allow(clippy::unwrap_used)]
//! 127.0.0.1 (its own `sim`, and plain servers written here), through real
//! HTTP clients and raw sockets.

mod admin;
mod browser;
mod capacity;
mod cli;
mod dashboard;
mod degradation;
mod deploy;
mod events;
mod first_hour;
mod grpc;
mod hardening;
mod lifecycle;
mod netns;
mod operations;
mod policies;
mod proxy;
mod reload;
mod supervisor;
mod support;
mod tls;
mod trailers;
mod transparent;
