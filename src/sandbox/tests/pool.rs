//! Tests of sandbox::pool against the fake engine.
