//! When a recurring action is due: a period (`5m`, `1d`) or a cron expression in a time zone
//! (`{cron: "0 3 * * *", tz: Europe/Brussels}`), and the next slot after a given moment.
//!
//! Pure: the caller passes the times (Unix milliseconds) in and persists what comes out.

use std::fmt;
use std::str::FromStr as _;

use chrono::{TimeZone as _, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::template::{describe, period_from_value};

/// How a recurring action repeats. Stored in the service document: a period as its number of
/// seconds (as before cron existed), a cron expression as `{"cron": …, "tz": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Schedule {
    /// Every this many seconds, counted from when the action was first seen.
    Period(u64),
    /// At the slots of a cron expression (5 fields, or 6 with seconds first; `@daily`…).
    Cron {
        /// The expression.
        cron: String,
        /// The IANA time zone the expression is read in (`Europe/Brussels`); UTC when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tz: Option<String>,
    },
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Period(secs) => write!(f, "every {secs}s"),
            Schedule::Cron { cron, tz } => {
                write!(f, "cron `{cron}` {}", tz.as_deref().unwrap_or("UTC"))
            }
        }
    }
}

impl Schedule {
    /// Reads `recurring:` as written: a period (`5m`, or seconds) or a map `{cron, tz}` (or
    /// `{period}`); a bad expression or time zone is an error saying which and why.
    pub fn from_value(value: &Value) -> Result<Schedule, String> {
        let Value::Object(map) = value else {
            return period_from_value(value).map(Schedule::Period);
        };
        if let Some(unknown) = map
            .keys()
            .find(|k| !matches!(k.as_str(), "cron" | "tz" | "period"))
        {
            return Err(format!(
                "unknown key `{unknown}` (known: period, or cron and tz)"
            ));
        }
        let text = |key: &str| match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(format!("`{key}` must be a string, got {}", describe(other))),
        };
        let schedule = match (map.get("period"), text("cron")?) {
            (Some(_), Some(_)) => return Err("give either `period` or `cron`, not both".into()),
            (Some(period), None) => {
                if map.contains_key("tz") {
                    return Err("`tz` goes with `cron`, not with `period`".into());
                }
                Schedule::Period(period_from_value(period)?)
            }
            (None, Some(cron)) => Schedule::Cron {
                cron,
                tz: text("tz")?,
            },
            (None, None) => return Err("expected `period` or `cron`".into()),
        };
        schedule.check()?;
        Ok(schedule)
    }

    /// Checks a cron expression and its time zone.
    pub fn check(&self) -> Result<(), String> {
        if let Schedule::Cron { cron, tz } = self {
            parse_cron(cron)?;
            if let Some(tz) = tz {
                parse_tz(tz)?;
            }
        }
        Ok(())
    }

    /// The first slot strictly after `now_ms`, counted from `base_ms` (a period's slots are
    /// `base + k × period`, so a period keeps its phase across restarts). `None` for a cron
    /// expression with no slot left, or one that no longer parses.
    pub fn next_after(&self, base_ms: i64, now_ms: i64) -> Option<i64> {
        match self {
            Schedule::Period(secs) => {
                let period = (*secs).max(1).saturating_mul(1000).min(i64::MAX as u64) as i64;
                if base_ms > now_ms {
                    return Some(base_ms);
                }
                let k = (now_ms - base_ms) / period + 1;
                Some(base_ms.saturating_add(k.saturating_mul(period)))
            }
            Schedule::Cron { cron, tz } => {
                let cron = parse_cron(cron).ok()?;
                let from = Utc.timestamp_millis_opt(now_ms.max(base_ms)).single()?;
                let next = match tz {
                    Some(tz) => {
                        let tz = parse_tz(tz).ok()?;
                        cron.find_next_occurrence(&from.with_timezone(&tz), false)
                            .ok()?
                            .timestamp_millis()
                    }
                    None => cron
                        .find_next_occurrence(&from, false)
                        .ok()?
                        .timestamp_millis(),
                };
                Some(next)
            }
        }
    }
}

/// Parses a cron expression, with the reason when it does not parse.
fn parse_cron(text: &str) -> Result<croner::Cron, String> {
    croner::Cron::from_str(text).map_err(|err| {
        format!(
            "cron expression `{text}` is not valid ({err}); expected 5 fields: minute hour day-of-month month day-of-week, e.g. \"0 3 * * *\""
        )
    })
}

/// Parses an IANA time zone name, with the reason when it is unknown.
fn parse_tz(text: &str) -> Result<chrono_tz::Tz, String> {
    text.parse::<chrono_tz::Tz>().map_err(|_| {
        format!(
            "time zone `{text}` is unknown; expected an IANA name such as Europe/Brussels or UTC"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// 2026-03-28 12:00:00 UTC (a Saturday; Brussels changes to summer time the next night).
    const NOON: i64 = 1_774_699_200_000;
    const HOUR: i64 = 3_600_000;

    fn check(value: Value, expected: Result<Schedule, &str>) {
        let got = Schedule::from_value(&value);
        match (&got, &expected) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{value}"),
            (Err(a), Err(b)) => assert!(a.contains(b), "{value}: {a:?} lacks {b:?}"),
            _ => panic!("{value}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn schedules_as_written() {
        check(json!("5m"), Ok(Schedule::Period(300)));
        check(json!(45), Ok(Schedule::Period(45)));
        check(json!({"period": "1d"}), Ok(Schedule::Period(86_400)));
        check(
            json!({"cron": "0 3 * * *", "tz": "Europe/Brussels"}),
            Ok(Schedule::Cron {
                cron: "0 3 * * *".into(),
                tz: Some("Europe/Brussels".into()),
            }),
        );
        check(
            json!({"cron": "@hourly"}),
            Ok(Schedule::Cron {
                cron: "@hourly".into(),
                tz: None,
            }),
        );
        check(
            json!({"cron": "0 3 * *"}),
            Err("cron expression `0 3 * *` is not valid"),
        );
        check(json!({"cron": "0 25 * * *"}), Err("is not valid"));
        check(
            json!({"cron": "0 3 * * *", "tz": "Europe/Bruxelles"}),
            Err("time zone `Europe/Bruxelles` is unknown"),
        );
        check(json!({"cron": 3}), Err("`cron` must be a string"));
        check(json!({"period": "1d", "cron": "@daily"}), Err("not both"));
        check(
            json!({"period": "1d", "tz": "UTC"}),
            Err("`tz` goes with `cron`"),
        );
        check(json!({"every": "1d"}), Err("unknown key `every`"));
        check(json!({}), Err("expected `period` or `cron`"));
    }

    #[test]
    fn stored_forms_round_trip_and_old_periods_read() {
        let old: Schedule = serde_json::from_value(json!(300)).expect("old period");
        assert_eq!(old, Schedule::Period(300));
        let cron = Schedule::Cron {
            cron: "0 3 * * *".into(),
            tz: Some("Europe/Brussels".into()),
        };
        let back: Schedule =
            serde_json::from_value(serde_json::to_value(&cron).expect("json")).expect("read");
        assert_eq!(back, cron);
    }

    #[test]
    fn a_period_keeps_its_phase() {
        let p = Schedule::Period(3600);
        assert_eq!(p.next_after(NOON, NOON), Some(NOON + HOUR));
        assert_eq!(p.next_after(NOON, NOON + HOUR - 1), Some(NOON + HOUR));
        assert_eq!(p.next_after(NOON, NOON + HOUR), Some(NOON + 2 * HOUR));
        // Five missed slots: the next one is still on the hour, once.
        assert_eq!(
            p.next_after(NOON, NOON + 5 * HOUR + 7),
            Some(NOON + 6 * HOUR)
        );
        assert_eq!(p.next_after(NOON + HOUR, NOON), Some(NOON + HOUR));
    }

    #[test]
    fn cron_slots_follow_the_time_zone_across_a_clock_change() {
        let at3 = Schedule::Cron {
            cron: "0 3 * * *".into(),
            tz: Some("Europe/Brussels".into()),
        };
        // 03:00 in Brussels on 28 March is 02:00 UTC (winter time, UTC+1) ...
        let first = at3.next_after(0, NOON - 12 * HOUR).expect("slot");
        assert_eq!(first, NOON - 10 * HOUR);
        // ... and on 29 March 01:00 UTC (summer time, UTC+2 since 02:00 that night).
        let second = at3.next_after(0, first).expect("slot");
        assert_eq!(second - first, 23 * HOUR);
        assert_eq!(at3.next_after(0, second), Some(second + 24 * HOUR));
        let utc = Schedule::Cron {
            cron: "0 3 * * *".into(),
            tz: None,
        };
        assert_eq!(utc.next_after(0, NOON), Some(NOON + 15 * HOUR));
        assert_eq!(
            utc.next_after(0, NOON + 15 * HOUR),
            Some(NOON + 39 * HOUR),
            "strictly after"
        );
    }
}
