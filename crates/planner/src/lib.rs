//! planner (skeleton).
