//! Tests of sandbox::helpers against the fake engine.
