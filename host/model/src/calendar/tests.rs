//! Fire instants pinned by hand (UTC instants written out), DST days of 2026 in four zones,
//! missed-fire plans, and properties of the ordering.

use chrono::{TimeZone, Utc};
use chrono_tz::America::New_York;
use chrono_tz::Asia::Kolkata;
use chrono_tz::Australia::Lord_Howe;
use chrono_tz::Europe::Paris;
use chrono_tz::Tz;
use proptest::prelude::*;

use super::*;

const SEC: i64 = 1_000;
const MIN: i64 = 60 * SEC;
const HOUR: i64 = 60 * MIN;

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
        .single()
        .unwrap()
        .timestamp_millis()
}

fn cron_in(expr: &str, tz: &str) -> Calendar {
    Calendar::new(Timing::Cron(expr.to_owned()), Some(tz), None, None).unwrap()
}

/// Local midnight of the day and of the next day, as instants.
fn local_day(tz: Tz, y: i32, mo: u32, d: u32) -> (i64, i64) {
    let start = tz.with_ymd_and_hms(y, mo, d, 0, 0, 0).single().unwrap();
    let next = start.date_naive().succ_opt().unwrap();
    let end = tz
        .from_local_datetime(&next.and_hms_opt(0, 0, 0).unwrap())
        .single()
        .unwrap();
    (start.timestamp_millis(), end.timestamp_millis())
}

/// Every fire instant in `[from, to)`, by repeated `next_after`.
fn fires_in(cal: &Calendar, (from, to): (i64, i64)) -> Vec<i64> {
    let mut out = Vec::new();
    let mut at = from - 1;
    while let Some(next) = cal.next_after(at) {
        if next >= to {
            break;
        }
        out.push(next);
        at = next;
    }
    out
}

#[test]
fn cron_with_seconds_fires_on_the_second() {
    let cal = cron_in("*/5 * * * * *", "UTC");
    let t = utc(2026, 1, 1, 0, 0, 0);
    assert_eq!(cal.next_after(t + 2_500), Some(t + 5 * SEC));
    assert_eq!(cal.next_after(t + 5 * SEC), Some(t + 10 * SEC));
    assert_eq!(cal.next_after(t - 1), Some(t));
    assert_eq!(cal.last_at_or_before(t + 9_999), Some(t + 5 * SEC));
    assert_eq!(cal.last_at_or_before(t + 10 * SEC), Some(t + 10 * SEC));
}

#[test]
fn five_field_cron_fires_at_second_zero_in_a_half_hour_zone() {
    // Kolkata is +05:30 all year: 09:30 there is 04:00 UTC.
    let cal = cron_in("30 9 * * *", "Asia/Kolkata");
    let first = utc(2026, 11, 30, 4, 0, 0);
    assert_eq!(cal.next_after(utc(2026, 11, 30, 0, 0, 0)), Some(first));
    assert_eq!(
        cal.upcoming(first - 1, 3),
        vec![first, first + 24 * HOUR, first + 48 * HOUR]
    );
}

#[test]
fn weekdays_are_numbered_as_in_unix_cron() {
    let sat_noon = utc(2026, 11, 28, 12, 0, 0);
    // 1-5 is Monday to Friday: Monday 30 November 2026 (the crate alone reads Sunday-Thursday).
    let weekdays = cron_in("0 9 * * 1-5", "UTC");
    assert_eq!(
        weekdays.next_after(sat_noon),
        Some(utc(2026, 11, 30, 9, 0, 0))
    );
    let sunday = utc(2026, 11, 29, 9, 0, 0);
    assert_eq!(
        cron_in("0 9 * * 0", "UTC").next_after(sat_noon),
        Some(sunday)
    );
    assert_eq!(
        cron_in("0 9 * * 7", "UTC").next_after(sat_noon),
        Some(sunday)
    );
    assert_eq!(
        cron_in("0 0 9 * * SAT-SUN", "UTC").upcoming(utc(2026, 11, 25, 0, 0, 0), 3),
        vec![
            utc(2026, 11, 28, 9, 0, 0),
            sunday,
            utc(2026, 12, 5, 9, 0, 0)
        ]
    );
    assert_eq!(weekdays_of("*/2"), "SUN,TUE,THU,SAT");
    assert_eq!(weekdays_of("mon,3-4,6/2"), "MON,WED,THU,SAT");
    assert_eq!(weekdays_of("0-7"), "*");
}

fn weekdays_of(field: &str) -> String {
    weekdays(field).unwrap()
}

#[test]
fn paris_spring_forward_skips_the_missing_local_time() {
    // 29 March 2026: 02:00 CET becomes 03:00 CEST; 02:30 does not exist that day.
    let cal = cron_in("0 30 2 * * *", "Europe/Paris");
    assert_eq!(
        fires_in(&cal, local_day(Paris, 2026, 3, 29)),
        Vec::<i64>::new()
    );
    // 28 March 02:30 CET (+1) is 01:30 UTC; 30 March 02:30 CEST (+2) is 00:30 UTC.
    assert_eq!(
        cal.upcoming(utc(2026, 3, 28, 0, 0, 0), 2),
        vec![utc(2026, 3, 28, 1, 30, 0), utc(2026, 3, 30, 0, 30, 0)]
    );
}

#[test]
fn paris_fall_back_fires_the_repeated_local_time_once() {
    // 25 October 2026: 03:00 CEST becomes 02:00 CET; 02:30 happens at 00:30 and 01:30 UTC.
    let cal = cron_in("0 30 2 * * *", "Europe/Paris");
    let first = utc(2026, 10, 25, 0, 30, 0);
    let next_day = utc(2026, 10, 26, 1, 30, 0);
    assert_eq!(fires_in(&cal, local_day(Paris, 2026, 10, 25)), vec![first]);
    assert_eq!(cal.next_after(first), Some(next_day));
    // Looking from inside the repeated hour (02:10 CET, the second pass) does not fire 02:30
    // again, and the last fire is still the first occurrence.
    let second_pass = utc(2026, 10, 25, 1, 10, 0);
    assert_eq!(cal.next_after(second_pass), Some(next_day));
    assert_eq!(
        cal.last_at_or_before(utc(2026, 10, 25, 1, 40, 0)),
        Some(first)
    );
}

#[test]
fn new_york_quarter_hours_fire_four_times_on_the_fall_back_day() {
    // 1 November 2026: 02:00 EDT becomes 01:00 EST; 01:00-01:59 happens twice.
    let cal = cron_in("0 */15 1 * * *", "America/New_York");
    // 01:00 EDT (-4) is 05:00 UTC.
    assert_eq!(
        fires_in(&cal, local_day(New_York, 2026, 11, 1)),
        vec![
            utc(2026, 11, 1, 5, 0, 0),
            utc(2026, 11, 1, 5, 15, 0),
            utc(2026, 11, 1, 5, 30, 0),
            utc(2026, 11, 1, 5, 45, 0),
        ]
    );
    // The scheduler looking in the second 01:xx finds the first pass's last fire.
    assert_eq!(
        cal.last_at_or_before(utc(2026, 11, 1, 6, 50, 0)),
        Some(utc(2026, 11, 1, 5, 45, 0))
    );
}

#[test]
fn new_york_spring_forward_skips_the_missing_hour() {
    // 8 March 2026: 02:00 EST becomes 03:00 EDT.
    let cal = cron_in("0 */15 2 * * *", "America/New_York");
    assert_eq!(
        fires_in(&cal, local_day(New_York, 2026, 3, 8)),
        Vec::<i64>::new()
    );
    assert_eq!(fires_in(&cal, local_day(New_York, 2026, 3, 9)).len(), 4);
    // The last 02:45 before the gap is 7 March, 07:45 UTC (EST, -5).
    assert_eq!(
        cal.last_at_or_before(utc(2026, 3, 8, 12, 0, 0)),
        Some(utc(2026, 3, 7, 7, 45, 0))
    );
}

#[test]
fn lord_howe_half_hour_shifts() {
    // Lord Howe is +10:30, +11:00 in summer. 4 October 2026: 02:00 becomes 02:30 (02:15 does not
    // exist); 5 April 2026: 02:00 becomes 01:30 (01:45 happens twice).
    let missing = cron_in("0 15 2 * * *", "Australia/Lord_Howe");
    assert_eq!(
        fires_in(&missing, local_day(Lord_Howe, 2026, 10, 4)),
        Vec::<i64>::new()
    );
    let repeated = cron_in("0 45 1 * * *", "Australia/Lord_Howe");
    // 01:45 at +11:00 on 5 April is 14:45 UTC on 4 April.
    assert_eq!(
        fires_in(&repeated, local_day(Lord_Howe, 2026, 4, 5)),
        vec![utc(2026, 4, 4, 14, 45, 0)]
    );
}

#[test]
fn hourly_cron_and_hourly_interval_count_local_days() {
    // (zone, day, fires of an hourly cron, fires of a 1-hour interval from local midnight)
    let cases = [
        (Paris, (2026, 3, 29), 23, 23),
        (Paris, (2026, 10, 25), 24, 25),
        (Paris, (2026, 7, 1), 24, 24),
        (New_York, (2026, 3, 8), 23, 23),
        (New_York, (2026, 11, 1), 24, 25),
        // Days of 23.5 and 24.5 hours: 02:00 falls in the skipped half hour, and the repeated
        // half hour (01:30-02:00) holds no :00; the interval counts elapsed time.
        (Lord_Howe, (2026, 10, 4), 23, 24),
        (Lord_Howe, (2026, 4, 5), 24, 25),
        (Kolkata, (2026, 3, 29), 24, 24),
        (Kolkata, (2026, 10, 25), 24, 24),
    ];
    for (tz, (y, m, d), cron_fires, interval_fires) in cases {
        let day = local_day(tz, y, m, d);
        let hourly = cron_in("0 0 * * * *", tz.name());
        let n = fires_in(&hourly, day).len();
        assert_eq!(n, cron_fires, "hourly cron in {tz} on {y}-{m}-{d}");
        let every = Calendar::new(
            Timing::Every(Duration::from_secs(3600)),
            Some(tz.name()),
            Some(day.0),
            None,
        )
        .unwrap();
        let n = fires_in(&every, day).len();
        assert_eq!(n, interval_fires, "hourly interval in {tz} on {y}-{m}-{d}");
    }
}

#[test]
fn every_is_anchored_at_start_in_absolute_time() {
    let start = utc(2026, 3, 29, 0, 0, 0) + 123;
    let cal = Calendar::new(
        Timing::Every(Duration::from_secs(90)),
        None,
        Some(start),
        None,
    )
    .unwrap();
    assert_eq!(cal.next_after(start - 10 * HOUR), Some(start));
    assert_eq!(cal.next_after(start), Some(start + 90 * SEC));
    assert_eq!(cal.next_after(start + 90 * SEC - 1), Some(start + 90 * SEC));
    assert_eq!(
        cal.last_at_or_before(start + 179 * SEC),
        Some(start + 90 * SEC)
    );
    assert_eq!(cal.last_at_or_before(start - 1), None);
}

#[test]
fn at_fires_once() {
    let t = utc(2026, 12, 24, 18, 0, 0);
    let cal = Calendar::new(Timing::At(t), Some("Europe/Paris"), None, None).unwrap();
    assert_eq!(cal.next_after(t - 1), Some(t));
    assert_eq!(cal.next_after(t), None);
    assert_eq!(cal.upcoming(0, 5), vec![t]);
    assert_eq!(cal.last_at_or_before(t + HOUR), Some(t));
}

#[test]
fn start_and_end_bound_the_fires() {
    let t = utc(2026, 6, 1, 0, 0, 0);
    let cal = Calendar::new(
        Timing::Cron("* * * * * *".to_owned()),
        None,
        Some(t + 10_500),
        Some(t + 20 * SEC),
    )
    .unwrap();
    assert_eq!(cal.next_after(t), Some(t + 11 * SEC));
    assert_eq!(cal.next_after(t + 19 * SEC), Some(t + 20 * SEC));
    assert_eq!(cal.next_after(t + 20 * SEC), None);
    assert_eq!(cal.upcoming(t, 100).len(), 10);
    assert_eq!(cal.last_at_or_before(t + HOUR), Some(t + 20 * SEC));
    assert_eq!(cal.last_at_or_before(t + 10 * SEC), None);
}

#[test]
fn invalid_definitions_name_their_field() {
    let cron = |e: &str| Calendar::new(Timing::Cron(e.to_owned()), None, None, None);
    for bad in [
        "",
        "* * * *",
        "* * * * * * * *",
        "61 * * * * *",
        "0 9 * * 8",
        "0 9 * * FRI-MON",
    ] {
        let err = cron(bad).unwrap_err();
        assert_eq!(err.field(), "cron", "{bad:?}: {err}");
        assert!(err.to_string().contains("6 fields"), "{err}");
    }
    let err = Calendar::new(Timing::At(0), Some("Mars/Olympus"), None, None).unwrap_err();
    assert_eq!(err.field(), "timezone");
    assert!(err.to_string().contains("Mars/Olympus"), "{err}");
    for every in [
        Duration::from_millis(999),
        MAX_EVERY + Duration::from_secs(1),
        Duration::from_micros(1_500_500),
    ] {
        let err = Calendar::new(Timing::Every(every), None, None, None).unwrap_err();
        assert_eq!(err.field(), "every", "{every:?}");
    }
    let err = Calendar::new(Timing::At(5), None, Some(10), Some(10)).unwrap_err();
    assert_eq!(err.field(), "end_at");
    assert!(Calendar::new(Timing::At(5), None, Some(10), Some(11)).is_ok());
}

/// A 1-second cron that was not looked at for ten minutes.
fn outage() -> (Calendar, i64, i64) {
    let due = utc(2026, 6, 1, 0, 0, 0);
    (cron_in("* * * * * *", "UTC"), due, due + 10 * MIN)
}

#[test]
fn fire_all_catches_up_on_the_most_recent_fires_only() {
    let (cal, due, now) = outage();
    let plan = plan_fires(&cal, due, now, 0, Missed::FireAll, None);
    assert_eq!(plan.fires.len(), MAX_CATCH_UP);
    assert_eq!(plan.fires[0], now - 99 * SEC);
    assert_eq!(*plan.fires.last().unwrap(), now);
    assert!(plan.fires.windows(2).all(|w| w[1] - w[0] == SEC));
    assert_eq!(plan.next_fire_at, Some(now + SEC));

    let short = plan_fires(&cal, due, due + 3_500, 0, Missed::FireAll, None);
    assert_eq!(
        short.fires,
        vec![due, due + SEC, due + 2 * SEC, due + 3 * SEC]
    );
    assert_eq!(short.next_fire_at, Some(due + 4 * SEC));
}

#[test]
fn fire_once_fires_the_newest_due_instant_late_or_not() {
    let (cal, due, now) = outage();
    let plan = plan_fires(&cal, due, now + 700, 100, Missed::FireOnce, None);
    assert_eq!(plan.fires, vec![now]);
    assert_eq!(plan.next_fire_at, Some(now + SEC));
}

#[test]
fn skip_fires_only_what_is_on_time() {
    let (cal, due, now) = outage();
    let late = plan_fires(&cal, due, now + 700, 100, Missed::Skip, None);
    assert_eq!(late.fires, Vec::<i64>::new());
    assert_eq!(late.next_fire_at, Some(now + SEC));
    let on_time = plan_fires(&cal, due, now + 100, 100, Missed::Skip, None);
    assert_eq!(on_time.fires, vec![now]);
    // On time at the due instant itself: the ordinary case of a scheduler that is not behind.
    let ordinary = plan_fires(&cal, due, due, 0, Missed::Skip, None);
    assert_eq!(ordinary.fires, vec![due]);
    assert_eq!(ordinary.next_fire_at, Some(due + SEC));
}

#[test]
fn runs_left_keeps_the_oldest_fires_and_finishes_the_schedule() {
    let (cal, due, _) = outage();
    let plan = plan_fires(&cal, due, due + 3 * SEC, 0, Missed::FireAll, Some(2));
    assert_eq!(plan.fires, vec![due, due + SEC]);
    assert_eq!(plan.next_fire_at, None);
    let exact = plan_fires(&cal, due, due, 0, Missed::FireOnce, Some(1));
    assert_eq!((exact.fires, exact.next_fire_at), (vec![due], None));
    let more = plan_fires(&cal, due, due, 0, Missed::FireOnce, Some(2));
    assert_eq!(
        (more.fires, more.next_fire_at),
        (vec![due], Some(due + SEC))
    );
    let none = plan_fires(&cal, due, due, 0, Missed::FireOnce, Some(0));
    assert_eq!((none.fires, none.next_fire_at), (Vec::<i64>::new(), None));
}

#[test]
fn not_yet_due_plans_nothing_and_a_one_shot_ends() {
    let (cal, due, _) = outage();
    let early = plan_fires(&cal, due, due - 1, 0, Missed::FireAll, None);
    assert_eq!(
        (early.fires, early.next_fire_at),
        (Vec::<i64>::new(), Some(due))
    );
    let at = Calendar::new(Timing::At(due), None, None, None).unwrap();
    let plan = plan_fires(&at, due, due + HOUR, 0, Missed::FireAll, None);
    assert_eq!((plan.fires, plan.next_fire_at), (vec![due], None));
}

#[test]
fn fire_all_across_a_fall_back_fires_each_local_time_once() {
    // Down from 00:50 to 03:10 New York time on 1 November 2026, a quarter-hourly cron in the
    // 1 o'clock hour: the four 01:xx times fire once each, not eight times.
    let cal = cron_in("0 */15 1 * * *", "America/New_York");
    let due = utc(2026, 11, 1, 5, 0, 0);
    let plan = plan_fires(
        &cal,
        due,
        utc(2026, 11, 1, 8, 10, 0),
        0,
        Missed::FireAll,
        None,
    );
    assert_eq!(
        plan.fires,
        vec![due, due + 15 * MIN, due + 30 * MIN, due + 45 * MIN]
    );
    // 01:00 EST on 2 November.
    assert_eq!(plan.next_fire_at, Some(utc(2026, 11, 2, 6, 0, 0)));
}

const CRONS: &[&str] = &[
    "*/7 * * * * *",
    "0 */15 1 * * *",
    "0 30 2 * * *",
    "0 0 * * * *",
    "0 0 9 * * 1-5",
    "0 45 1 * * *",
    "0 15 2 * * *",
];
const ZONES: &[&str] = &[
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn next_after_increases_and_upcoming_repeats_it(
        cron in proptest::sample::select(CRONS),
        zone in proptest::sample::select(ZONES),
        // Any instant of 2026, when every zone above has its transitions.
        after in 1_767_225_600_000i64..1_798_761_600_000,
    ) {
        let cal = cron_in(cron, zone);
        let upcoming = cal.upcoming(after, 12);
        let mut at = after;
        for expected in &upcoming {
            let next = cal.next_after(at).unwrap();
            prop_assert!(next > at);
            prop_assert_eq!(next, *expected);
            // Nothing fires in between: the last fire before `next` is at or before `at`.
            prop_assert!(cal.last_at_or_before(next - 1).is_none_or(|l| l <= at));
            prop_assert_eq!(cal.last_at_or_before(next), Some(next));
            at = next;
        }
        prop_assert_eq!(upcoming.len(), 12);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn plans_fire_due_calendar_instants_in_order(
        cron in proptest::sample::select(CRONS),
        zone in proptest::sample::select(ZONES),
        after in 1_767_225_600_000i64..1_798_761_600_000,
        // Up to three days behind.
        behind in 0i64..259_200_000,
        late_after in 0i64..120_000,
        missed in proptest::sample::select(&Missed::ALL[..]),
    ) {
        let cal = cron_in(cron, zone);
        let due = cal.next_after(after).unwrap();
        let now = due + behind;
        let plan = plan_fires(&cal, due, now, late_after, missed, None);
        prop_assert_eq!(plan.next_fire_at, cal.next_after(now));
        prop_assert!(plan.fires.len() <= MAX_CATCH_UP);
        prop_assert!(plan.fires.iter().all(|f| *f >= due && *f <= now));
        // Each one is a calendar instant, and they are consecutive ones.
        prop_assert!(plan.fires.iter().all(|f| cal.last_at_or_before(*f) == Some(*f)));
        prop_assert!(plan.fires.windows(2).all(|w| cal.next_after(w[0]) == Some(w[1])));
        let newest = cal.last_at_or_before(now).unwrap();
        match missed {
            Missed::FireOnce => prop_assert_eq!(&plan.fires, &vec![newest]),
            Missed::Skip if now - newest <= late_after => {
                prop_assert_eq!(&plan.fires, &vec![newest]);
            }
            Missed::Skip => prop_assert!(plan.fires.is_empty()),
            Missed::FireAll => {
                prop_assert_eq!(plan.fires.last(), Some(&newest));
                // All of them unless there were more than the bound.
                if plan.fires.len() < MAX_CATCH_UP {
                    prop_assert_eq!(plan.fires[0], due);
                }
            }
        }
    }
}
