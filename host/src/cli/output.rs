//! Human-readable output: aligned tables, key/value blocks, human times, sizes and progress bars.
//! `--json` bypasses all of this and prints the server's JSON.

use std::io::{ErrorKind, IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

/// Writes command output to stdout (through the `out!`/`outln!` macros). When the reader has
/// gone (`| head`), the rest of the output has nowhere to go: exit 0 quietly. Any other write
/// failure (a full disk behind a redirect) is reported and exits 1.
pub fn emit(text: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        if e.kind() == ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// Prints rows under headers (see [`render_table`]).
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    out!("{}", render_table(headers, rows));
}

/// Rows under headers, each column as wide as its widest cell. Columns that hold only numbers
/// (or "-") are right-aligned so magnitudes line up. Nothing is cut: a cell with line breaks
/// (an error with a backtrace) continues on the next lines in its own column, and a long last
/// column simply runs on.
pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let width = |s: &str| s.chars().count();
    let n = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| width(h)).collect();
    // Right-align a column only if it has at least one number and nothing but numbers and "-".
    let mut numeric = vec![true; n];
    let mut has_number = vec![false; n];
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(n) {
            for line in cell.lines() {
                widths[i] = widths[i].max(width(line));
            }
            let is_number = cell.parse::<f64>().is_ok();
            has_number[i] |= is_number;
            numeric[i] &= is_number || cell == "-";
        }
    }
    for (num, has) in numeric.iter_mut().zip(&has_number) {
        *num &= *has;
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let start = out.len();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            let pad = widths[i].saturating_sub(width(cell));
            if numeric[i] {
                out.extend(std::iter::repeat_n(' ', pad));
                out.push_str(cell);
            } else {
                out.push_str(cell);
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        let trimmed = start + out[start..].trim_end().len();
        out.truncate(trimmed);
        out.push('\n');
    };
    line(headers);
    for row in rows {
        let cells: Vec<Vec<&str>> = (0..n)
            .map(|i| {
                let c = row.get(i).map(String::as_str).unwrap_or("");
                let lines: Vec<&str> = c.lines().collect();
                if lines.is_empty() { vec![""] } else { lines }
            })
            .collect();
        let height = cells.iter().map(Vec::len).max().unwrap_or(1);
        for l in 0..height {
            let parts: Vec<&str> = cells
                .iter()
                .map(|c| c.get(l).copied().unwrap_or(""))
                .collect();
            line(&parts);
        }
    }
    out
}

/// `n` with a comma between each group of three digits: `120,000`.
pub fn thousands(n: u64) -> String {
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

/// Prints `key  value` lines, keys padded to one width (see [`render_fields`]).
pub fn fields(pairs: &[(String, String)]) {
    out!("{}", render_fields(pairs, ""));
}

/// `key  value` lines with the keys padded to one width, each line prefixed with `indent`. A
/// value with line breaks continues on the next lines, under its first line.
pub fn render_fields(pairs: &[(String, String)], indent: &str) -> String {
    let width = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        let mut lines = v.lines();
        let first = lines.next().unwrap_or("");
        out.push_str(format!("{indent}{k:<width$}  {first}").trim_end());
        out.push('\n');
        for more in lines {
            let blank = "";
            out.push_str(format!("{indent}{blank:<width$}  {more}").trim_end());
            out.push('\n');
        }
    }
    out
}

/// A JSON value as a table cell: strings unquoted, null as "-", other values as compact JSON.
/// Control characters are escaped so a value (an error text, a payload) cannot break the table
/// or send escape sequences to the terminal.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => sanitize(s),
        other => sanitize(&other.to_string()),
    }
}

/// Escapes control characters (`\n` → `\\n`, ESC → `\u{1b}`), keeping everything else.
pub fn sanitize(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Text that may span lines (an error with a backtrace): each line [`sanitize`]d, the line
/// breaks kept so tables and fields can lay the lines out.
pub fn multiline(s: &str) -> String {
    s.lines().map(sanitize).collect::<Vec<_>>().join("\n")
}

/// Milliseconds with precision where it matters: "0.37ms", "12.5ms", "250ms", "1.25s", "5m 3s".
pub fn millis(ms: f64) -> String {
    fn trim(s: String) -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s
        }
    }
    if !ms.is_finite() || ms < 0.0 {
        return "-".to_owned();
    }
    if ms < 1.0 {
        format!("{}ms", trim(format!("{ms:.2}")))
    } else if ms < 100.0 {
        format!("{}ms", trim(format!("{ms:.1}")))
    } else if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else if ms < 60_000.0 {
        format!("{}s", trim(format!("{:.2}", ms / 1000.0)))
    } else {
        short_duration(ms as u64)
    }
}

/// At most `max` characters of `s`, with "…" when something was cut. Only for previews (a
/// payload in a list); the full value is always one `get` or `--json` away.
pub fn preview(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// How long ago (or how far ahead) `at_ms` is from `now_ms`: "12s ago", "in 5m", "just now".
pub fn relative(at_ms: i64, now_ms: i64) -> String {
    let diff = now_ms - at_ms;
    if diff.abs() < 1000 {
        return "just now".to_owned();
    }
    let span = short_duration(diff.unsigned_abs());
    if diff > 0 {
        format!("{span} ago")
    } else {
        format!("in {span}")
    }
}

/// A duration in its two largest units, rounded down: "850ms", "12s", "5m 3s", "3h 12m", "2d 4h".
/// For ages and waits, where "about how long" is what matters.
pub fn short_duration(ms: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1000, "s"),
    ];
    if ms < 1000 {
        return format!("{ms}ms");
    }
    for (i, (size, name)) in UNITS.iter().enumerate() {
        if ms >= *size {
            let major = ms / size;
            let rest = ms % size;
            return match UNITS.get(i + 1) {
                Some((next, next_name)) if rest / next > 0 => {
                    format!("{major}{name} {}{next_name}", rest / next)
                }
                _ => format!("{major}{name}"),
            };
        }
    }
    unreachable!("ms >= 1000 matches the seconds unit")
}

/// A configured duration, exactly, in the form the flags accept ("30s", "1m 30s", "250ms").
pub fn exact_duration(ms: u64) -> String {
    if ms == 0 {
        return "0s".to_owned();
    }
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

/// A size in bytes for people: "812 B", "1.5 KiB", "12.0 MiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// An RFC 3339 time from the server with how long ago it was: "2026-01-02T03:04:05Z (5m ago)".
/// `ms` is the same instant as Unix milliseconds (the API sends both).
pub fn when(text: &Value, ms: &Value, now_ms: i64) -> String {
    match (text.as_str(), ms.as_i64()) {
        (Some(t), Some(ms)) => format!("{} ({})", sanitize(t), relative(ms, now_ms)),
        (Some(t), None) => sanitize(t),
        (None, Some(ms)) => relative(ms, now_ms),
        (None, None) => "-".to_owned(),
    }
}

/// `relative` for a cell, "-" when the server sent no time.
pub fn ago_cell(ms: &Value, now_ms: i64) -> String {
    ms.as_i64()
        .map(|ms| relative(ms, now_ms))
        .unwrap_or_else(|| "-".to_owned())
}

/// Prints JSON for scripts: pretty, or the text as is when the server's answer was not JSON.
pub fn json(v: &Value) {
    outln!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// Whether progress bars may be drawn: only for a person watching (stderr is a terminal) and
/// never with `--json`, whose consumers read stdout and may log stderr.
pub fn progress_enabled(json: bool) -> bool {
    !json && std::io::stderr().is_terminal()
}

/// A progress bar on stderr: with a length (bytes of a file) it shows a bar and an ETA,
/// without one a spinner with the running count. Hidden when [`progress_enabled`] is false.
pub fn progress(len: Option<u64>, unit: &str, json: bool) -> ProgressBar {
    if !progress_enabled(json) {
        return ProgressBar::hidden();
    }
    let (bar, template) = match len {
        Some(len) => (
            ProgressBar::new(len),
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} (eta {eta}) {msg}"
                .to_owned(),
        ),
        None => (
            ProgressBar::new_spinner(),
            format!("{{spinner}} [{{elapsed_precise}}] {{human_pos}} {unit} ({{per_sec}}) {{msg}}"),
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_text_left_and_numbers_right() {
        let t = render_table(
            &["NAME", "READY"],
            &[
                vec!["orders".into(), "5".into()],
                vec!["q".into(), "1234".into()],
            ],
        );
        assert_eq!(t, "NAME    READY\norders      5\nq        1234\n");
    }

    #[test]
    fn tables_keep_long_cells_whole() {
        let long = "x".repeat(300);
        let t = render_table(
            &["ID", "ERROR"],
            &[
                vec!["1".into(), long.clone()],
                vec!["22".into(), "-".into()],
            ],
        );
        assert!(t.contains(&long), "nothing is cut");
        assert_eq!(t.lines().nth(2), Some("22  -"), "{t}");
        // Every line starts its second column at the same place.
        let t = render_table(&["A", "B"], &[vec!["é".into(), "x".into()]]);
        assert_eq!(t, "A  B\né  x\n");
    }

    #[test]
    fn multi_line_cells_continue_in_their_column() {
        let t = render_table(
            &["ID", "ERROR", "X"],
            &[vec!["7".into(), "trapped:\n  0: abort".into(), "y".into()]],
        );
        assert_eq!(t, "ID  ERROR       X\n 7  trapped:    y\n      0: abort\n");
        let f = render_fields(
            &[("err".into(), "a\nb".into()), ("k".into(), "v".into())],
            "",
        );
        assert_eq!(f, "err  a\n     b\nk    v\n");
        assert_eq!(multiline("a\u{1b}\nb"), "a\\u{1b}\nb");
    }

    #[test]
    fn only_columns_with_numbers_are_right_aligned() {
        let t = render_table(&["NAME", "AGE"], &[vec!["a".into(), "-".into()]]);
        assert_eq!(t, "NAME  AGE\na     -\n");
    }

    #[test]
    fn milliseconds_keep_their_precision() {
        assert_eq!(millis(0.372), "0.37ms");
        assert_eq!(millis(1.0), "1ms");
        assert_eq!(millis(12.5), "12.5ms");
        assert_eq!(millis(250.4), "250ms");
        assert_eq!(millis(1250.0), "1.25s");
        assert_eq!(millis(303_000.0), "5m 3s");
        assert_eq!(millis(f64::NAN), "-");
    }

    #[test]
    fn an_empty_table_is_just_the_headers() {
        assert_eq!(render_table(&["ID", "STATE"], &[]), "ID  STATE\n");
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(35_000), "35,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn fields_align() {
        let f = render_fields(
            &[
                ("queue".into(), "orders".into()),
                ("max_attempts".into(), "5".into()),
                ("empty".into(), "".into()),
            ],
            "  ",
        );
        assert_eq!(f, "  queue         orders\n  max_attempts  5\n  empty\n");
    }

    #[test]
    fn cells_read_plainly_and_safely() {
        assert_eq!(cell(&Value::Null), "-");
        assert_eq!(cell(&json!("x")), "x");
        assert_eq!(cell(&json!(3)), "3");
        assert_eq!(cell(&json!({"a": 1})), r#"{"a":1}"#);
        assert_eq!(
            cell(&json!("line 1\nline 2\u{1b}[31m")),
            "line 1\\nline 2\\u{1b}[31m"
        );
    }

    #[test]
    fn previews_mark_what_they_cut() {
        assert_eq!(preview("short", 10), "short");
        assert_eq!(preview("0123456789abc", 10), "012345678…");
    }

    #[test]
    fn durations_read_like_a_person_would_say_them() {
        assert_eq!(short_duration(850), "850ms");
        assert_eq!(short_duration(12_400), "12s");
        assert_eq!(short_duration(303_000), "5m 3s");
        assert_eq!(short_duration(300_000), "5m");
        assert_eq!(
            short_duration(3 * 3_600_000 + 12 * 60_000 + 5_000),
            "3h 12m"
        );
        assert_eq!(short_duration(2 * 86_400_000 + 4 * 3_600_000), "2d 4h");
        assert_eq!(relative(0, 500), "just now");
        assert_eq!(relative(0, 90_000), "1m 30s ago");
        assert_eq!(relative(60_000, 0), "in 1m");
    }

    #[test]
    fn configured_durations_are_exact() {
        assert_eq!(exact_duration(30_000), "30s");
        assert_eq!(exact_duration(90_000), "1m 30s");
        assert_eq!(exact_duration(250), "250ms");
        assert_eq!(exact_duration(0), "0s");
        // What is printed parses back to the same value.
        let back = crate::config::parse_duration(&exact_duration(3_723_004)).unwrap();
        assert_eq!(back.as_millis(), 3_723_004);
    }

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(bytes(812), "812 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(12 * 1024 * 1024), "12.0 MiB");
    }

    #[test]
    fn times_show_the_instant_and_the_age() {
        assert_eq!(
            when(&json!("1970-01-01T00:01:00Z"), &json!(60_000), 120_000),
            "1970-01-01T00:01:00Z (1m ago)"
        );
        assert_eq!(when(&Value::Null, &Value::Null, 0), "-");
        assert_eq!(ago_cell(&json!(0), 5_000), "5s ago");
    }

    #[test]
    fn no_progress_bar_for_scripts() {
        assert!(!progress_enabled(true));
        assert!(progress(Some(10), "messages", true).is_hidden());
    }
}
