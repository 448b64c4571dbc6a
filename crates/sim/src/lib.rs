//! sim (skeleton).
