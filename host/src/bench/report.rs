//! Collected figures, medians, ratios to the baseline, target checks, and how they are printed.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Value, json};

use super::args::{Plan, Scenario};
use crate::cli::output::thousands;

/// What a figure measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Unit {
    #[serde(rename = "msgs/s")]
    MsgsPerSec,
    #[serde(rename = "us")]
    Micros,
    #[serde(rename = "ns")]
    Nanos,
    #[serde(rename = "ms")]
    Millis,
    #[serde(rename = "s")]
    Seconds,
    #[serde(rename = "MiB")]
    MiB,
    #[serde(rename = "count")]
    Count,
    /// One figure divided by another of the same run.
    #[serde(rename = "ratio")]
    Ratio,
}

impl Unit {
    fn label(self) -> &'static str {
        match self {
            Unit::MsgsPerSec => "msgs/s",
            Unit::Micros => "µs",
            Unit::Nanos => "ns",
            Unit::Millis => "ms",
            Unit::Seconds => "s",
            Unit::MiB => "MiB",
            Unit::Count => "",
            Unit::Ratio => "×",
        }
    }

    fn format(self, v: f64) -> String {
        match self {
            Unit::MsgsPerSec | Unit::Count => thousands(v.round() as u64),
            Unit::Micros => format!("{v:.1}"),
            Unit::Nanos => format!("{v:.0}"),
            Unit::Millis | Unit::Seconds => format!("{v:.2}"),
            Unit::MiB => format!("{v:.1}"),
            Unit::Ratio => format!("{v:.2}"),
        }
    }
}

/// Which baseline figure a Spool figure is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseKey {
    InsertSingle,
    InsertBatch,
    ClaimDelete,
    LeaseAck,
    /// Raw PostgreSQL (the `postgres` scenario's floor).
    PgInsertBatch,
    PgClaimThenDelete,
    PgClaimDelete,
    PgLeaseAck,
}

impl BaseKey {
    pub fn variant(self) -> &'static str {
        match self {
            BaseKey::InsertSingle => "insert, 1 per transaction",
            BaseKey::InsertBatch => "insert, 100 per transaction",
            BaseKey::ClaimDelete => "claim+delete, 100 per transaction",
            BaseKey::LeaseAck => "lease, then ack (delete), 100 per transaction",
            BaseKey::PgInsertBatch => "raw PostgreSQL: insert, 100 per transaction, 4 connections",
            BaseKey::PgClaimThenDelete => {
                "raw PostgreSQL: SKIP LOCKED claim, then delete, 100 per transaction, 4 connections"
            }
            BaseKey::PgClaimDelete => {
                "raw PostgreSQL: claim+delete in one statement, 100 per transaction, 4 connections"
            }
            BaseKey::PgLeaseAck => {
                "raw PostgreSQL: lease, then ack (delete), 100 per transaction, 4 connections"
            }
        }
    }

    /// The scenario that measures this floor.
    pub fn scenario(self) -> Scenario {
        match self {
            BaseKey::PgInsertBatch
            | BaseKey::PgClaimThenDelete
            | BaseKey::PgClaimDelete
            | BaseKey::PgLeaseAck => Scenario::Postgres,
            _ => Scenario::Baseline,
        }
    }
}

/// One measurement of one run.
#[derive(Debug, Clone)]
pub struct Sample {
    pub scenario: Scenario,
    pub variant: String,
    pub unit: Unit,
    pub value: f64,
    pub baseline: Option<BaseKey>,
}

impl Sample {
    pub fn new(scenario: Scenario, variant: impl Into<String>, unit: Unit, value: f64) -> Sample {
        Sample {
            scenario,
            variant: variant.into(),
            unit,
            value,
            baseline: None,
        }
    }

    pub fn vs(mut self, key: BaseKey) -> Sample {
        self.baseline = Some(key);
        self
    }
}

/// All runs of one figure.
#[derive(Debug, Clone)]
pub struct Figure {
    pub scenario: Scenario,
    pub variant: String,
    pub unit: Unit,
    pub runs: Vec<f64>,
    pub baseline: Option<BaseKey>,
    /// Measured while the run was being cut short (fewer messages than planned).
    pub partial: bool,
}

impl Figure {
    pub fn median(&self) -> f64 {
        let mut v = self.runs.clone();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        match n {
            0 => f64::NAN,
            _ if n % 2 == 1 => v[n / 2],
            _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }
}

/// Everything measured so far, in the order first seen.
#[derive(Debug, Default)]
pub struct Results {
    pub figures: Vec<Figure>,
    /// `--plugin` is not echo (a Python or JavaScript handler, say): echo's targets do not apply.
    pub not_echo: bool,
}

impl Results {
    pub fn add(&mut self, samples: Vec<Sample>, partial: bool) {
        for s in samples {
            if !s.value.is_finite() {
                continue;
            }
            match self
                .figures
                .iter_mut()
                .find(|f| f.scenario == s.scenario && f.variant == s.variant)
            {
                Some(f) => {
                    f.runs.push(s.value);
                    f.partial |= partial;
                }
                None => self.figures.push(Figure {
                    scenario: s.scenario,
                    variant: s.variant,
                    unit: s.unit,
                    runs: vec![s.value],
                    baseline: s.baseline,
                    partial,
                }),
            }
        }
    }

    fn baseline(&self, key: BaseKey) -> Option<f64> {
        self.get(key.scenario(), key.variant())
    }

    pub fn get(&self, scenario: Scenario, variant: &str) -> Option<f64> {
        self.figures
            .iter()
            .find(|f| f.scenario == scenario && f.variant == variant)
            .map(Figure::median)
    }

    pub fn ratio(&self, f: &Figure) -> Option<f64> {
        let base = self.baseline(f.baseline?)?;
        (base > 0.0).then(|| f.median() / base)
    }

    /// The best median among figures of `scenario` whose variant starts with `prefix`.
    fn best(&self, scenario: Scenario, prefix: &str, unit: Unit) -> Option<(String, f64)> {
        self.figures
            .iter()
            .filter(|f| f.scenario == scenario && f.unit == unit && f.variant.starts_with(prefix))
            .map(|f| (f.variant.clone(), f.median()))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// The targets against what was measured (only those that were measured). The drain
    /// targets are echo's: with another `--plugin`, its drain figures are not checked.
    pub fn targets(&self) -> Vec<TargetCheck> {
        let mut out = Vec::new();
        // A throughput target, held by the best figure of `scenario` whose variant starts with
        // `prefix`.
        let mut rate = |what: &str, scenario, prefix: &str, min: u64| {
            if let Some((figure, measured)) = self.best(scenario, prefix, Unit::MsgsPerSec) {
                let target = format!("≥ {} msgs/s", thousands(min));
                let bound = Bound::AtLeast(min as f64);
                out.push(TargetCheck::new(what, figure, target, bound, measured));
            }
        };
        rate(
            "batch enqueue, in-process",
            Scenario::Batch,
            "in-process",
            300_000,
        );
        rate("batch enqueue, HTTP", Scenario::Batch, "http", 100_000);
        rate(
            "single enqueue, 16 producers, in-process",
            Scenario::Enqueue,
            "in-process, 16",
            40_000,
        );
        if !self.not_echo {
            rate(
                "drain through echo, reuse",
                Scenario::Drain,
                "reuse",
                100_000,
            );
            rate(
                "drain through echo, fresh",
                Scenario::Drain,
                "fresh",
                30_000,
            );
            let best_ratio = self
                .figures
                .iter()
                .filter(|f| f.scenario == Scenario::Drain)
                .filter_map(|f| Some((f.variant.clone(), self.ratio(f)?)))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((figure, measured)) = best_ratio {
                let target = "≥ 0.6 × baseline".to_owned();
                let what = "drain vs baseline claim+delete";
                out.push(TargetCheck::new(
                    what,
                    figure,
                    target,
                    Bound::AtLeast(0.6),
                    measured,
                ));
            }
        }
        let one_host = super::postgres::drain_variant(1);
        if let Some(f) = self
            .figures
            .iter()
            .find(|f| f.scenario == Scenario::Postgres && f.variant == one_host)
            && let Some(measured) = self.ratio(f)
        {
            out.push(TargetCheck::new(
                "PostgreSQL drain, 1 host, vs raw claim, then delete",
                one_host,
                "≥ 0.5 × raw floor".to_owned(),
                Bound::AtLeast(0.5),
                measured,
            ));
        }
        // Targets on every figure they apply to, in the order the figures were first seen.
        out.extend(self.figures.iter().filter_map(|f| {
            let (what, bound, target) = figure_target(f)?;
            Some(TargetCheck::new(
                what,
                f.variant.clone(),
                target,
                bound,
                f.median(),
            ))
        }));
        out
    }
}

/// The target `f` is held to, if any: what it is, the bound, and the bound as the report says it.
fn figure_target(f: &Figure) -> Option<(&'static str, Bound, String)> {
    use super::{deploy, publish, schedule};
    use Bound::{AtLeast, AtMost};
    let v = f.variant.as_str();
    Some(match f.scenario {
        Scenario::Latency if v.ends_with("start p99") => (
            "enqueue → handler start p99",
            AtMost(10.0),
            "≤ 10 ms".to_owned(),
        ),
        Scenario::Noisy if f.unit == Unit::Ratio => {
            ("noisy neighbour slowdown", AtMost(2.0), "≤ 2 ×".to_owned())
        }
        Scenario::Publish if f.unit == Unit::Ratio => {
            let min = publish::target(v)?;
            (
                "publish vs direct enqueue, per delivery",
                AtLeast(min),
                format!("≥ {min} ×"),
            )
        }
        Scenario::Schedule if v == schedule::p99_variant(1000) => (
            "schedule fire lateness p99, 1,000 schedules",
            AtMost(schedule::P99_TARGET_MS),
            format!("≤ {} ms", schedule::P99_TARGET_MS),
        ),
        Scenario::Deploy if v.ends_with(deploy::FIRST_ACK) => (
            "upload answered → first message acked",
            AtMost(5.0),
            "≤ 5 s".to_owned(),
        ),
        Scenario::Deploy if v.ends_with(deploy::P99_RATIO) => (
            "running queues' enqueue p99 while a plugin deploys",
            AtMost(2.0),
            "≤ 2 ×".to_owned(),
        ),
        Scenario::Postgres if v == super::postgres::HOSTS_RATIO => (
            "PostgreSQL: three hosts drain faster than one",
            AtLeast(1.0),
            "> 1 ×".to_owned(),
        ),
        Scenario::Rss if f.unit == Unit::MiB && v.contains("c=64") => (
            "peak RSS, queue full, 64 handlers",
            AtMost(100.0),
            "≤ 100 MiB".to_owned(),
        ),
        _ => return None,
    })
}

/// Which side of a target a figure must be on; the target itself is met there.
#[derive(Debug, Clone, Copy)]
enum Bound {
    AtLeast(f64),
    AtMost(f64),
}

impl Bound {
    fn met(self, v: f64) -> bool {
        match self {
            Bound::AtLeast(min) => v >= min,
            Bound::AtMost(max) => v <= max,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    pub what: String,
    pub figure: String,
    pub target: String,
    pub measured: f64,
    pub met: bool,
}

impl TargetCheck {
    fn new(what: &str, figure: String, target: String, bound: Bound, measured: f64) -> TargetCheck {
        TargetCheck {
            what: what.to_owned(),
            figure,
            target,
            measured,
            met: bound.met(measured),
        }
    }
}

/// The machine the numbers come from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub memory_mib: Option<u64>,
    pub os: String,
    pub kernel: Option<String>,
    /// 1-minute load average when the report was made: other work on the machine skews the
    /// figures, and this says how much there was.
    pub load_avg_1m: Option<f64>,
}

impl Machine {
    pub fn detect() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let memory_mib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
                .map(|kib| kib / 1024)
        });
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            memory_mib,
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|s| s.trim().to_owned()),
            load_avg_1m: load_avg(),
        }
    }
}

/// The 1-minute load average (`/proc/loadavg`); `None` off Linux.
pub fn load_avg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Peak resident set size of this process so far (`VmHWM`), in KiB; `None` off Linux.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The human-readable report.
pub fn table(
    results: &Results,
    machine: &Machine,
    plan: &Plan,
    interrupted: bool,
    process_rss_kib: Option<u64>,
) -> String {
    let mut rows: Vec<[String; 6]> = vec![[
        "scenario".into(),
        "variant".into(),
        "median".into(),
        "unit".into(),
        "× baseline".into(),
        "runs (min … max)".into(),
    ]];
    for f in &results.figures {
        let ratio = results
            .ratio(f)
            .map_or_else(|| "—".to_owned(), |r| format!("{r:.2}"));
        let (lo, hi) = f
            .runs
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(*v), hi.max(*v))
            });
        let spread = if f.runs.len() > 1 {
            format!(
                "{} ({} … {})",
                f.runs.len(),
                f.unit.format(lo),
                f.unit.format(hi)
            )
        } else {
            "1".to_owned()
        };
        let partial = if f.partial { " (partial)" } else { "" };
        rows.push([
            f.scenario.name().to_owned(),
            format!("{}{partial}", f.variant),
            f.unit.format(f.median()),
            f.unit.label().to_owned(),
            ratio,
            spread,
        ]);
    }
    let mut widths = [0usize; 6];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "spool bench — {} cores, {}, load {}, synchronous={}, {} run(s) per figure (median shown){}",
        machine.cores,
        machine.cpu,
        machine
            .load_avg_1m
            .map_or_else(|| "n/a".to_owned(), |l| format!("{l:.2}")),
        plan.sync.name().to_uppercase(),
        plan.runs,
        if plan.quick { ", --quick sizes" } else { "" }
    );
    out.push('\n');
    for (i, r) in rows.iter().enumerate() {
        let mut line = String::new();
        for (j, (c, w)) in r.iter().zip(widths).enumerate() {
            let pad = w - c.chars().count();
            // Numbers right-aligned, text left-aligned.
            if j == 2 || j == 4 {
                let _ = write!(line, "{}{c}  ", " ".repeat(pad));
            } else {
                let _ = write!(line, "{c}{}  ", " ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
        if i == 0 {
            let total: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
            out.push_str(&"-".repeat(total));
            out.push('\n');
        }
    }
    if let Some(kib) = process_rss_kib {
        let _ = writeln!(
            out,
            "\npeak RSS of this bench process (all scenarios together): {:.1} MiB",
            kib as f64 / 1024.0
        );
    }
    let checks = results.targets();
    if !checks.is_empty() {
        out.push_str(
            "\ntargets (set for 2 cores and 100k messages; SQLite on a file with \
             synchronous=NORMAL, latency at 5,000 msgs/s; PostgreSQL against its raw floor):\n",
        );
        for c in &checks {
            let _ = writeln!(
                out,
                "  {:<4} {:<42} {:>12}  target {:<18} ({})",
                if c.met { "met" } else { "MISS" },
                c.what,
                format!("{:.2}", c.measured),
                c.target,
                c.figure
            );
        }
    }
    if interrupted {
        out.push_str("\nthe run was cut short (Ctrl-C or --max-time): figures above are what was measured before that\n");
    }
    out
}

/// The JSON document of `--json`.
pub fn json_doc(
    results: &Results,
    machine: &Machine,
    plan: &Plan,
    interrupted: bool,
    elapsed_s: f64,
    process_rss_kib: Option<u64>,
) -> Value {
    let figures: Vec<Value> = results
        .figures
        .iter()
        .map(|f| {
            json!({
                "scenario": f.scenario.name(),
                "variant": f.variant,
                "unit": f.unit,
                "median": f.median(),
                "runs": f.runs,
                "baseline": f.baseline.map(BaseKey::variant),
                "ratio_to_baseline": results.ratio(f),
                "partial": f.partial,
            })
        })
        .collect();
    let scenarios: Vec<&str> = plan.scenarios.iter().map(|s| s.name()).collect();
    json!({
        "spool_version": env!("CARGO_PKG_VERSION"),
        "machine": machine,
        "settings": {
            "sync": plan.sync.name(),
            "scenarios": scenarios,
            "messages": plan.messages,
            "single_enqueue_messages": plan.single_messages,
            "publish_messages": plan.publish_messages,
            "rate": plan.rate,
            "duration_s": plan.duration.as_secs_f64(),
            "runs": plan.runs,
            "concurrency": plan.concurrency,
            "modes": plan.modes.iter().map(|m| m.name()).collect::<Vec<_>>(),
            "quick": plan.quick,
        },
        "interrupted": interrupted,
        "elapsed_s": elapsed_s,
        "process_peak_rss_mib": process_rss_kib.map(|k| k as f64 / 1024.0),
        "results": figures,
        "targets": results.targets(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_thousands() {
        let mut r = Results::default();
        for v in [3.0, 1.0, 2.0] {
            r.add(
                vec![
                    Sample::new(Scenario::Drain, "fresh, c=1", Unit::MsgsPerSec, v)
                        .vs(BaseKey::ClaimDelete),
                ],
                false,
            );
        }
        r.add(
            vec![Sample::new(
                Scenario::Baseline,
                BaseKey::ClaimDelete.variant(),
                Unit::MsgsPerSec,
                4.0,
            )],
            false,
        );
        assert_eq!(r.figures[0].median(), 2.0);
        assert_eq!(r.ratio(&r.figures[0]), Some(0.5));
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
    }

    #[test]
    fn checks_each_target_on_the_figures_it_applies_to() {
        use Scenario::*;
        use Unit::*;
        let p99_of = crate::bench::schedule::p99_variant;
        let figures = [
            (Batch, "in-process, 16 producers", MsgsPerSec, 350_000.0),
            (Batch, "in-process, 1 producer", MsgsPerSec, 200_000.0),
            (Batch, "http, 16 producers", MsgsPerSec, 90_000.0),
            (Enqueue, "in-process, 16 producers", MsgsPerSec, 40_000.0),
            (Drain, "reuse, c=8", MsgsPerSec, 120_000.0),
            (Drain, "fresh, c=8", MsgsPerSec, 20_000.0),
            (
                Baseline,
                BaseKey::ClaimDelete.variant(),
                MsgsPerSec,
                200_000.0,
            ),
            (Latency, "reuse, enqueue → start p99", Millis, 12.0),
            (Latency, "reuse, enqueue → ack p99", Millis, 12.0),
            (Noisy, "enqueue p99, noisy ÷ quiet", Ratio, 1.5),
            (Noisy, "quiet, HTTP enqueue p99", Millis, 1.5),
            (
                Publish,
                "http, fan-out 3 ÷ direct, per delivery",
                Ratio,
                0.7,
            ),
            (Publish, "http, filter, own queue ÷ direct", Ratio, 0.4),
            (Schedule, &p99_of(1000), Millis, 60.0),
            (Schedule, &p99_of(10), Millis, 60.0),
            (
                Deploy,
                "py: upload answered → first message acked",
                Seconds,
                4.0,
            ),
            (Deploy, "py: enqueue p99, deploying ÷ quiet", Ratio, 2.5),
            (Rss, "queue full, c=64", MiB, 90.0),
            (Rss, "queue full, c=1", MiB, 190.0),
        ];
        let mut r = Results::default();
        for (scenario, variant, unit, value) in figures {
            let mut sample = Sample::new(scenario, variant, unit, value);
            if scenario == Drain {
                sample = sample.vs(BaseKey::ClaimDelete);
            }
            r.add(vec![sample], false);
        }
        let line = |c: &TargetCheck| {
            let TargetCheck {
                what,
                figure,
                target,
                measured,
                met,
            } = c;
            format!("{what} | {figure} | {target} | {measured} | {met}")
        };
        let checks: Vec<String> = r.targets().iter().map(line).collect();
        assert_eq!(
            checks,
            [
                "batch enqueue, in-process | in-process, 16 producers | ≥ 300,000 msgs/s | 350000 | true",
                "batch enqueue, HTTP | http, 16 producers | ≥ 100,000 msgs/s | 90000 | false",
                "single enqueue, 16 producers, in-process | in-process, 16 producers | ≥ 40,000 msgs/s | 40000 | true",
                "drain through echo, reuse | reuse, c=8 | ≥ 100,000 msgs/s | 120000 | true",
                "drain through echo, fresh | fresh, c=8 | ≥ 30,000 msgs/s | 20000 | false",
                "drain vs baseline claim+delete | reuse, c=8 | ≥ 0.6 × baseline | 0.6 | true",
                "enqueue → handler start p99 | reuse, enqueue → start p99 | ≤ 10 ms | 12 | false",
                "noisy neighbour slowdown | enqueue p99, noisy ÷ quiet | ≤ 2 × | 1.5 | true",
                "publish vs direct enqueue, per delivery | http, fan-out 3 ÷ direct, per delivery | ≥ 0.8 × | 0.7 | false",
                "publish vs direct enqueue, per delivery | http, filter, own queue ÷ direct | ≥ 0.3 × | 0.4 | true",
                "schedule fire lateness p99, 1,000 schedules | 1,000 schedules, fire lateness p99 | ≤ 50 ms | 60 | false",
                "upload answered → first message acked | py: upload answered → first message acked | ≤ 5 s | 4 | true",
                "running queues' enqueue p99 while a plugin deploys | py: enqueue p99, deploying ÷ quiet | ≤ 2 × | 2.5 | false",
                "peak RSS, queue full, 64 handlers | queue full, c=64 | ≤ 100 MiB | 90 | true",
            ]
        );
        // With another `--plugin`, echo's drain targets do not apply.
        r.not_echo = true;
        let checks: Vec<String> = r.targets().iter().map(line).collect();
        assert_eq!(checks.len(), 11);
        assert!(
            checks.iter().all(|c| !c.starts_with("drain")),
            "{checks:#?}"
        );
    }
}
