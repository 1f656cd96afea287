//! Collected figures, medians, ratios to the baseline, target checks, and how they are printed.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Value, json};

use super::args::{Plan, Scenario};

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
}

impl BaseKey {
    pub fn variant(self) -> &'static str {
        match self {
            BaseKey::InsertSingle => "insert, 1 per transaction",
            BaseKey::InsertBatch => "insert, 100 per transaction",
            BaseKey::ClaimDelete => "claim+delete, 100 per transaction",
            BaseKey::LeaseAck => "lease, then ack (delete), 100 per transaction",
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
        self.get(Scenario::Baseline, key.variant())
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
        let echo = !self.not_echo;
        let mut at_least = |what: &str, found: Option<(String, f64)>, min: f64, text: &str| {
            if let Some((variant, v)) = found {
                out.push(TargetCheck {
                    what: what.to_owned(),
                    figure: variant,
                    target: text.to_owned(),
                    measured: v,
                    met: v >= min,
                });
            }
        };
        at_least(
            "batch enqueue, in-process",
            self.best(Scenario::Batch, "in-process", Unit::MsgsPerSec),
            300_000.0,
            "≥ 300,000 msgs/s",
        );
        at_least(
            "batch enqueue, HTTP",
            self.best(Scenario::Batch, "http", Unit::MsgsPerSec),
            100_000.0,
            "≥ 100,000 msgs/s",
        );
        at_least(
            "single enqueue, 16 producers, in-process",
            self.best(Scenario::Enqueue, "in-process, 16", Unit::MsgsPerSec),
            40_000.0,
            "≥ 40,000 msgs/s",
        );
        if echo {
            at_least(
                "drain through echo, reuse",
                self.best(Scenario::Drain, "reuse", Unit::MsgsPerSec),
                100_000.0,
                "≥ 100,000 msgs/s",
            );
            at_least(
                "drain through echo, fresh",
                self.best(Scenario::Drain, "fresh", Unit::MsgsPerSec),
                30_000.0,
                "≥ 30,000 msgs/s",
            );
            let best_ratio = self
                .figures
                .iter()
                .filter(|f| f.scenario == Scenario::Drain)
                .filter_map(|f| Some((f.variant.clone(), self.ratio(f)?)))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            at_least(
                "drain vs baseline claim+delete",
                best_ratio,
                0.6,
                "≥ 0.6 × baseline",
            );
        }
        for f in &self.figures {
            let v = f.median();
            if f.scenario == Scenario::Latency && f.variant.ends_with("start p99") {
                out.push(TargetCheck {
                    what: "enqueue → handler start p99".to_owned(),
                    figure: f.variant.clone(),
                    target: "≤ 10 ms".to_owned(),
                    measured: v,
                    met: v <= 10.0,
                });
            }
            if f.scenario == Scenario::Noisy && f.unit == Unit::Ratio {
                out.push(TargetCheck {
                    what: "noisy neighbour slowdown".to_owned(),
                    figure: f.variant.clone(),
                    target: "≤ 2 ×".to_owned(),
                    measured: v,
                    met: v <= 2.0,
                });
            }
            if f.scenario == Scenario::Publish
                && f.unit == Unit::Ratio
                && let Some(min) = super::publish::target(&f.variant)
            {
                out.push(TargetCheck {
                    what: "publish vs direct enqueue, per delivery".to_owned(),
                    figure: f.variant.clone(),
                    target: format!("≥ {min} ×"),
                    measured: v,
                    met: v >= min,
                });
            }
            if f.scenario == Scenario::Schedule && f.variant == super::schedule::p99_variant(1000) {
                out.push(TargetCheck {
                    what: "schedule fire lateness p99, 1,000 schedules".to_owned(),
                    figure: f.variant.clone(),
                    target: format!("≤ {} ms", super::schedule::P99_TARGET_MS),
                    measured: v,
                    met: v <= super::schedule::P99_TARGET_MS,
                });
            }
            if f.scenario == Scenario::Deploy && f.variant.ends_with(super::deploy::FIRST_ACK) {
                out.push(TargetCheck {
                    what: "upload answered → first message acked".to_owned(),
                    figure: f.variant.clone(),
                    target: "≤ 5 s".to_owned(),
                    measured: v,
                    met: v <= 5.0,
                });
            }
            if f.scenario == Scenario::Deploy && f.variant.ends_with(super::deploy::P99_RATIO) {
                out.push(TargetCheck {
                    what: "running queues' enqueue p99 while a plugin deploys".to_owned(),
                    figure: f.variant.clone(),
                    target: "≤ 2 ×".to_owned(),
                    measured: v,
                    met: v <= 2.0,
                });
            }
            if f.scenario == Scenario::Rss && f.unit == Unit::MiB && f.variant.contains("c=64") {
                out.push(TargetCheck {
                    what: "peak RSS, queue full, 64 handlers".to_owned(),
                    figure: f.variant.clone(),
                    target: "≤ 100 MiB".to_owned(),
                    measured: v,
                    met: v <= 100.0,
                });
            }
        }
        out
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

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
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
            "\ntargets (2 cores, file DB, synchronous=NORMAL, 100k messages, 5,000 msgs/s):\n",
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
}
