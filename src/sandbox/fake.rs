//! The recording fake engine (tests only). Placeholder until the fake lands.
