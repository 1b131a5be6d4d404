//! Cron schedules (pure): the five-field syntax Vercel's `crons` use
//! (minute, hour, day of month, month, day of week; `*`, `*/n`, `a-b`,
//! `a-b/n`, lists), and whether one fires in a given minute (UTC).

use crate::core::clock::Timestamp;

/// A parsed schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    fields: [Vec<u32>; 5],
}

const RANGES: [(u32, u32); 5] = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 6)];

impl Schedule {
    /// Parses `"*/5 * * * *"` and the like.
    pub fn parse(s: &str) -> Result<Schedule, String> {
        let parts: Vec<&str> = s.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(format!("{s:?}: a schedule has 5 fields"));
        }
        let mut fields: [Vec<u32>; 5] = Default::default();
        for (i, part) in parts.iter().enumerate() {
            let (lo, hi) = RANGES[i];
            for item in part.split(',') {
                let (range, step) = match item.split_once('/') {
                    Some((r, n)) => (
                        r,
                        n.parse::<u32>()
                            .map_err(|_| format!("{s:?}: bad step {n:?}"))?,
                    ),
                    None => (item, 1),
                };
                if step == 0 {
                    return Err(format!("{s:?}: step 0"));
                }
                let (a, b) = match range {
                    "*" => (lo, hi),
                    r => match r.split_once('-') {
                        Some((a, b)) => (num(a, s)?, num(b, s)?),
                        None => {
                            let n = num(r, s)?;
                            (n, if item.contains('/') { hi } else { n })
                        }
                    },
                };
                if a < lo || b > hi || a > b {
                    return Err(format!("{s:?}: {item:?} is outside {lo}-{hi}"));
                }
                fields[i].extend((a..=b).step_by(step as usize));
            }
        }
        Ok(Schedule { fields })
    }

    /// Whether the schedule fires in the minute containing `at` (UTC).
    pub fn fires_at(&self, at: Timestamp) -> bool {
        let Ok(t) = time::OffsetDateTime::from_unix_timestamp(at.as_millis().div_euclid(1000))
        else {
            return false;
        };
        let values = [
            u32::from(t.minute()),
            u32::from(t.hour()),
            u32::from(t.day()),
            u32::from(u8::from(t.month())),
            u32::from(t.weekday().number_days_from_sunday()),
        ];
        self.fields.iter().zip(values).all(|(f, v)| f.contains(&v))
    }
}

fn num(s: &str, whole: &str) -> Result<u32, String> {
    s.parse()
        .map_err(|_| format!("{whole:?}: {s:?} is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vercel_schedules_fire_in_the_right_minutes() {
        // 2026-11-25T10:17:00Z is a Wednesday.
        let at = Timestamp::from_millis(1_795_601_820_000);
        assert!(Schedule::parse("* * * * *").unwrap().fires_at(at));
        assert!(Schedule::parse("17 * * * *").unwrap().fires_at(at));
        assert!(!Schedule::parse("18 * * * *").unwrap().fires_at(at));
        assert!(Schedule::parse("*/17 10 * * 3").unwrap().fires_at(at));
        assert!(!Schedule::parse("0 0 * * *").unwrap().fires_at(at));
        assert!(Schedule::parse("15-20/2 9-11 25 11 1-5")
            .unwrap()
            .fires_at(at));
        for bad in [
            "* * * *",
            "60 * * * *",
            "*/0 * * * *",
            "a * * * *",
            "5-1 * * * *",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }
}
