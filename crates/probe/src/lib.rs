//! probe (skeleton).
