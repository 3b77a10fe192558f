//! Tests of sandbox::runner against the fake engine.
