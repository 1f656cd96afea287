//! The message a schedule fires.

use crate::{NewMessage, Schedule, Target, rfc3339};

/// Header naming the schedule that fired a message (its id, in decimal).
pub const SCHEDULE_ID_HEADER: &str = "spool-schedule-id";
/// Header giving the fire instant a message belongs to, in RFC 3339 (UTC, milliseconds).
pub const FIRE_AT_HEADER: &str = "spool-fire-at";

/// The idempotency key of a schedule's fire: a fire written twice (a retried run-now, two
/// hosts racing past the store's other guards) yields the same message, not two, for as long
/// as the first one is kept.
pub fn fire_key(schedule: &Schedule, fire_at: i64) -> String {
    format!("schedule:{}:{fire_at}", schedule.id)
}

/// The message schedule `schedule` fires at `fire_at`: its payload, headers and priority, the
/// headers [`SCHEDULE_ID_HEADER`] and [`FIRE_AT_HEADER`] (replacing any the definition set, so
/// a consumer can trust them), the topic of a topic schedule, and the idempotency key
/// [`fire_key`] in the shared scope (schedules belong to no producer token).
pub fn fire_message(schedule: &Schedule, fire_at: i64) -> NewMessage {
    let mut headers: Vec<(String, String)> = schedule
        .headers
        .iter()
        .filter(|(k, _)| {
            !k.eq_ignore_ascii_case(SCHEDULE_ID_HEADER) && !k.eq_ignore_ascii_case(FIRE_AT_HEADER)
        })
        .cloned()
        .collect();
    headers.push((SCHEDULE_ID_HEADER.to_owned(), schedule.id.to_string()));
    // Fire instants are calendar instants within chrono's and time's range; the raw number
    // still says when it fired if formatting ever fails.
    headers.push((
        FIRE_AT_HEADER.to_owned(),
        rfc3339(fire_at).unwrap_or_else(|| fire_at.to_string()),
    ));
    NewMessage {
        payload: schedule.payload.clone(),
        priority: schedule.priority.unwrap_or(0),
        idempotency_key: Some(fire_key(schedule, fire_at)),
        headers,
        topic: match &schedule.target {
            Target::Topic(t) => Some(t.clone()),
            Target::Queue(_) => None,
        },
        ..NewMessage::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NewSchedule, Timing};

    fn schedule(target: Target) -> Schedule {
        let new = NewSchedule {
            headers: vec![
                ("kind".to_owned(), "report".to_owned()),
                ("Spool-Fire-At".to_owned(), "forged".to_owned()),
            ],
            priority: Some(3),
            payload: b"{}".to_vec(),
            ..NewSchedule::new(Timing::Cron("0 * * * *".to_owned()), target)
        };
        Schedule::new(42, 0, new)
    }

    #[test]
    fn fired_messages_carry_the_schedule_and_the_instant() {
        // 25 October 2026, 00:30:00.250 UTC.
        let at = 1_792_888_200_250;
        let m = fire_message(&schedule(Target::Topic("reports.daily".to_owned())), at);
        assert_eq!(
            m.headers,
            vec![
                ("kind".to_owned(), "report".to_owned()),
                ("spool-schedule-id".to_owned(), "42".to_owned()),
                (
                    "spool-fire-at".to_owned(),
                    "2026-10-25T00:30:00.25Z".to_owned()
                ),
            ]
        );
        assert_eq!(
            m.idempotency_key.as_deref(),
            Some("schedule:42:1792888200250")
        );
        assert_eq!(m.idempotency_scope, None);
        assert_eq!(m.topic.as_deref(), Some("reports.daily"));
        assert_eq!((m.priority, m.payload.as_slice()), (3, b"{}".as_slice()));
        let q = fire_message(&schedule(Target::Queue("q".to_owned())), at);
        assert_eq!(q.topic, None);
    }
}
