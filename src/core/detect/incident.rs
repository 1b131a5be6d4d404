//! Incident lifecycle (pure): when a verdict opens, escalates, holds or
//! resolves an incident. Resolution has hysteresis — the deployment must be
//! healthy for the whole sustained window — so a flapping signal does not
//! open and close incidents every minute.

use std::time::Duration;

use super::verdict::Level;
use crate::core::clock::Timestamp;

/// What the guard remembers about an open incident between evaluations.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenIncident {
    pub level: Level,
    pub opened_at: Timestamp,
    /// When the verdict last became `Ok`, if it still is.
    pub clear_since: Option<Timestamp>,
}

/// What to do with the incident for this deployment.
#[derive(Clone, Debug, PartialEq)]
pub enum Transition {
    /// Nothing is wrong and nothing is open.
    None,
    Open {
        level: Level,
    },
    /// Still open; `escalated` when the level rose.
    Update {
        level: Level,
        escalated: bool,
        clear_since: Option<Timestamp>,
    },
    Resolve,
}

/// Decides the transition for a new verdict.
pub fn transition(
    open: Option<&OpenIncident>,
    verdict: Level,
    now: Timestamp,
    sustained: Duration,
) -> Transition {
    let breaching = verdict >= Level::Warning;
    match open {
        None if breaching => Transition::Open { level: verdict },
        None => Transition::None,
        Some(inc) if breaching => Transition::Update {
            level: verdict.max(inc.level),
            escalated: verdict > inc.level,
            clear_since: None,
        },
        Some(inc) => {
            // Insufficient data neither clears nor breaches: keep the clock as it was.
            let clear_since = match verdict {
                Level::Ok => Some(inc.clear_since.unwrap_or(now)),
                _ => inc.clear_since,
            };
            match clear_since {
                Some(since)
                    if verdict == Level::Ok
                        && now.as_millis() - since.as_millis() >= sustained.as_millis() as i64 =>
                {
                    Transition::Resolve
                }
                _ => Transition::Update {
                    level: inc.level,
                    escalated: false,
                    clear_since,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUSTAINED: Duration = Duration::from_secs(300);

    fn at(min: i64) -> Timestamp {
        Timestamp::from_millis(min * 60_000)
    }

    fn open(level: Level, clear_since: Option<Timestamp>) -> OpenIncident {
        OpenIncident {
            level,
            opened_at: at(0),
            clear_since,
        }
    }

    #[test]
    fn breaches_open_incidents_and_healthy_verdicts_do_not() {
        assert_eq!(
            transition(None, Level::Warning, at(1), SUSTAINED),
            Transition::Open {
                level: Level::Warning
            }
        );
        assert_eq!(
            transition(None, Level::Ok, at(1), SUSTAINED),
            Transition::None
        );
        assert_eq!(
            transition(None, Level::InsufficientData, at(1), SUSTAINED),
            Transition::None
        );
    }

    #[test]
    fn a_rising_level_escalates_and_a_falling_one_keeps_the_high_water_mark() {
        let inc = open(Level::Warning, None);
        assert_eq!(
            transition(Some(&inc), Level::Critical, at(2), SUSTAINED),
            Transition::Update {
                level: Level::Critical,
                escalated: true,
                clear_since: None
            }
        );
        let inc = open(Level::Critical, None);
        assert_eq!(
            transition(Some(&inc), Level::Warning, at(2), SUSTAINED),
            Transition::Update {
                level: Level::Critical,
                escalated: false,
                clear_since: None
            }
        );
    }

    #[test]
    fn resolving_needs_a_full_sustained_window_of_health() {
        let inc = open(Level::Critical, None);
        let t = transition(Some(&inc), Level::Ok, at(10), SUSTAINED);
        assert_eq!(
            t,
            Transition::Update {
                level: Level::Critical,
                escalated: false,
                clear_since: Some(at(10))
            }
        );
        let inc = open(Level::Critical, Some(at(10)));
        assert!(matches!(
            transition(Some(&inc), Level::Ok, at(14), SUSTAINED),
            Transition::Update { .. }
        ));
        assert_eq!(
            transition(Some(&inc), Level::Ok, at(15), SUSTAINED),
            Transition::Resolve
        );
    }

    #[test]
    fn a_relapse_restarts_the_clear_clock() {
        let inc = open(Level::Warning, Some(at(10)));
        let t = transition(Some(&inc), Level::Warning, at(12), SUSTAINED);
        assert_eq!(
            t,
            Transition::Update {
                level: Level::Warning,
                escalated: false,
                clear_since: None
            }
        );
    }

    #[test]
    fn insufficient_data_neither_clears_nor_resolves() {
        let inc = open(Level::Warning, Some(at(10)));
        assert_eq!(
            transition(Some(&inc), Level::InsufficientData, at(30), SUSTAINED),
            Transition::Update {
                level: Level::Warning,
                escalated: false,
                clear_since: Some(at(10))
            }
        );
    }
}
