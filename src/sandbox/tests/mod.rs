//! Unit tests of the sandbox's orchestration against the recording fake engine
//! ([`super::fake`]): no Docker daemon is needed.

mod helpers;
mod lifecycle;
mod pool;
mod runner;
mod volumes;
