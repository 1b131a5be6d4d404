//! What happens over time: intake of signals, probing, evaluation, the
//! decision to roll back, approvals, execution of the plan's steps, backup
//! jobs and notifications. Flows use `core`, `store` and `integrations`.

pub mod approval;
pub mod audit_check;
pub mod backup;
pub mod config_snapshot;
pub mod decide;
pub mod evaluate;
pub mod execute;
pub mod intake;
pub mod notify;
pub mod plan;
pub mod probe;
pub mod registry;
