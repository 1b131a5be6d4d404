//! Detection, pure: rollup windows, the latency sketch, statistics, the rules
//! that turn evidence into a verdict, and the incident lifecycle. Nothing
//! here does I/O or reads the clock; [`crate::flows::evaluate`] feeds it.

pub mod incident;
pub mod sketch;
pub mod stats;
pub mod verdict;
pub mod window;
