//! Approval tokens (signed, expiring, single-use links) and the quorum rules
//! that turn decisions into an outcome.

pub mod quorum;
pub mod token;
