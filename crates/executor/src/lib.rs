//! executor (skeleton).
