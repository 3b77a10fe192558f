//! Tests of sandbox::volumes against the fake engine.
