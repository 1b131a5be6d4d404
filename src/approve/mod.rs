//! Approval: signed links and the quorum rules (pure), plus the approval
//! request records and the `/api/approve` page and decision.

pub mod quorum;
pub mod token;
