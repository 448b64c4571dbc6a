//! supervisor (skeleton).
