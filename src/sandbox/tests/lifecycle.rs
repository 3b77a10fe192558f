//! Tests of sandbox::lifecycle against the fake engine.
