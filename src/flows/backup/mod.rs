//! Backup jobs: the scheduled checks with their incidents and notifications
//! (`job`), and the local `backup create` / `backup verify` commands (`local`).

pub mod job;
pub mod local;
