//! Approval decisions (pure): N distinct eligible approvers, the requester
//! never counts, one rejection closes the request, nothing is accepted after
//! it closes or expires.

use crate::core::clock::Timestamp;

/// A decision an approver can make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
        }
    }

    pub fn parse(s: &str) -> Option<Decision> {
        match s {
            "approve" => Some(Decision::Approve),
            "reject" => Some(Decision::Reject),
            _ => None,
        }
    }
}

/// Lifecycle of an approval request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Pending,
    Approved,
    Rejected,
    Expired,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Rejected => "rejected",
            State::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        Some(match s {
            "pending" => State::Pending,
            "approved" => State::Approved,
            "rejected" => State::Rejected,
            "expired" => State::Expired,
            _ => return None,
        })
    }
}

/// What the rules need to know about a request.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub state: State,
    pub approvers: Vec<String>,
    pub quorum: u32,
    /// Who asked (a person, or `system`); never counts as an approver.
    pub requested_by: String,
    pub expires_at: Timestamp,
    /// Decisions so far: (approver, decision).
    pub decisions: Vec<(String, Decision)>,
}

/// Why a decision was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecisionError {
    #[error("{0} is not an approver for this request")]
    NotEligible(String),
    #[error("the person who requested the rollback cannot approve it")]
    RequesterCannotApprove,
    #[error("{0} has already decided")]
    AlreadyDecided(String),
    #[error("the request is already {0}")]
    Closed(&'static str),
    #[error("the request has expired")]
    Expired,
}

/// Applies one decision, returning the new state.
pub fn apply(
    r: &Request,
    approver: &str,
    decision: Decision,
    now: Timestamp,
) -> Result<State, DecisionError> {
    if r.state != State::Pending {
        return Err(DecisionError::Closed(r.state.as_str()));
    }
    if now > r.expires_at {
        return Err(DecisionError::Expired);
    }
    let same = |a: &str| a.eq_ignore_ascii_case(approver);
    if !r.approvers.iter().any(|a| same(a)) {
        return Err(DecisionError::NotEligible(approver.to_string()));
    }
    if same(&r.requested_by) {
        return Err(DecisionError::RequesterCannotApprove);
    }
    if r.decisions.iter().any(|(a, _)| same(a)) {
        return Err(DecisionError::AlreadyDecided(approver.to_string()));
    }
    if decision == Decision::Reject {
        return Ok(State::Rejected);
    }
    let approvals = 1 + r
        .decisions
        .iter()
        .filter(|(a, d)| *d == Decision::Approve && !same(a))
        .count();
    Ok(if approvals as u32 >= r.quorum {
        State::Approved
    } else {
        State::Pending
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp::from_millis(1_000_000);

    fn request(quorum: u32) -> Request {
        Request {
            state: State::Pending,
            approvers: vec!["alice@x.io".into(), "bob@x.io".into(), "carol@x.io".into()],
            quorum,
            requested_by: "carol@x.io".into(),
            expires_at: Timestamp::from_millis(2_000_000),
            decisions: vec![],
        }
    }

    #[test]
    fn quorum_needs_distinct_approvals() {
        let mut r = request(2);
        assert_eq!(
            apply(&r, "alice@x.io", Decision::Approve, NOW),
            Ok(State::Pending)
        );
        r.decisions.push(("alice@x.io".into(), Decision::Approve));
        assert_eq!(
            apply(&r, "ALICE@x.io", Decision::Approve, NOW),
            Err(DecisionError::AlreadyDecided("ALICE@x.io".into()))
        );
        assert_eq!(
            apply(&r, "bob@x.io", Decision::Approve, NOW),
            Ok(State::Approved)
        );
    }

    #[test]
    fn the_requester_and_strangers_cannot_approve() {
        let r = request(1);
        assert_eq!(
            apply(&r, "carol@x.io", Decision::Approve, NOW),
            Err(DecisionError::RequesterCannotApprove)
        );
        assert_eq!(
            apply(&r, "mallory@x.io", Decision::Approve, NOW),
            Err(DecisionError::NotEligible("mallory@x.io".into()))
        );
    }

    #[test]
    fn one_rejection_closes_and_closed_or_expired_requests_take_nothing() {
        let r = request(2);
        assert_eq!(
            apply(&r, "bob@x.io", Decision::Reject, NOW),
            Ok(State::Rejected)
        );
        let mut closed = request(2);
        closed.state = State::Rejected;
        assert_eq!(
            apply(&closed, "alice@x.io", Decision::Approve, NOW),
            Err(DecisionError::Closed("rejected"))
        );
        assert_eq!(
            apply(
                &request(1),
                "alice@x.io",
                Decision::Approve,
                Timestamp::from_millis(2_000_001)
            ),
            Err(DecisionError::Expired)
        );
    }
}
