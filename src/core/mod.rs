//! The pure core: policy, detection, approval tokens and quorum, the plan
//! model, SQL hazard analysis, the audit chain, durations and time values.
//! Nothing here does I/O, reads the clock or the environment: time, keys and
//! randomness are passed in. Depends on nothing else in this crate.

pub mod approval;
pub mod audit;
pub mod backup;
pub mod cause;
pub mod clock;
pub mod cron;
pub mod detect;
pub mod duration;
pub mod html;
pub mod plan;
pub mod policy;
pub mod secret;
pub mod session;
pub mod signed;
pub mod sql;
