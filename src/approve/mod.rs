//! Approval: signed links and the quorum rules (pure), plus the approval
//! request records and the `/api/approve` page and decision.

pub mod page;
pub mod quorum;
pub mod request;
pub mod slack;
pub mod token;
