//! Go formatting primitives that etcdctl's output is made of.
//!
//! etcdctl prints through Go's `fmt`, `strconv`, `time`, `encoding/json` and go-humanize; scripts
//! parse that output, so the CLI reproduces those exact spellings here, as pure functions.

use std::fmt::Write as _;
use std::time::Duration;

use base64::Engine as _;

/// Go's `strconv.Quote` applied to a Go string holding `bytes` (what `%q` prints).
pub fn quote(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_escaped_rune(&mut out, c);
        }
        // Go decodes every byte of an invalid sequence as its own RuneError and prints it as \xNN.
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push('"');
    out
}

fn push_escaped_rune(out: &mut String, c: char) {
    match c {
        '"' | '\\' => {
            out.push('\\');
            out.push(c);
        }
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        c if is_print(c) => out.push(c),
        c if (c as u32) < 0x20 || c == '\u{7f}' => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if (c as u32) < 0x10000 => {
            let _ = write!(out, "\\u{:04x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\U{:08x}", c as u32);
        }
    }
}

/// An approximation of Go's `unicode.IsPrint`: letters, marks, numbers, punctuation, symbols and
/// the ASCII space. Rust has no general-category table in std, so control, non-ASCII spacing and
/// the common format characters are what is excluded.
fn is_print(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    !matches!(c as u32,
        0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x180e | 0x200b..=0x200f | 0x202a..=0x202e
        | 0x2060..=0x2064 | 0x2066..=0x206f | 0xfeff | 0xfff9..=0xfffb | 0xe000..=0xf8ff
        | 0xf0000..=0x10ffff)
}

/// Go's `time.Duration.String()`, e.g. `1.93311ms`, `2s`, `1m30.5s`.
pub fn duration(d: Duration) -> String {
    let u = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    if u == 0 {
        return "0s".to_string();
    }
    if u < 1_000_000_000 {
        let (prec, unit) = if u < 1_000 {
            (0, "ns")
        } else if u < 1_000_000 {
            (3, "µs")
        } else {
            (6, "ms")
        };
        let (int, frac) = split_frac(u, prec);
        return format!("{int}{frac}{unit}");
    }
    let (secs, frac) = split_frac(u, 9);
    let mut out = String::new();
    let (mins, s) = (secs / 60, secs % 60);
    if mins > 0 {
        let (hours, m) = (mins / 60, mins % 60);
        if hours > 0 {
            let _ = write!(out, "{hours}h");
        }
        let _ = write!(out, "{m}m");
    }
    let _ = write!(out, "{s}{frac}s");
    out
}

/// Splits `v` into its integer part and `.digits` of its last `prec` decimal digits, trailing
/// zeros dropped (Go's `fmtFrac`).
fn split_frac(v: u64, prec: u32) -> (u64, String) {
    if prec == 0 {
        return (v, String::new());
    }
    let scale = 10u64.pow(prec);
    let frac = v % scale;
    if frac == 0 {
        return (v / scale, String::new());
    }
    let digits = format!("{frac:0width$}", width = prec as usize);
    (v / scale, format!(".{}", digits.trim_end_matches('0')))
}

/// Parses a Go duration (`2s`, `500ms`, `1m30s`, `1.5h`), as etcdctl's duration flags accept.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let invalid = || format!("time: invalid duration {}", quote(s.as_bytes()));
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() || rest.starts_with('-') {
        return Err(invalid());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..num_len].parse().map_err(|_| invalid())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per_unit = match &rest[..unit_len] {
            "ns" => 1e0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => {
                return Err(format!(
                    "time: missing unit in duration {}",
                    quote(s.as_bytes())
                ))
            }
            unit => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    quote(unit.as_bytes()),
                    quote(s.as_bytes())
                ))
            }
        };
        rest = &rest[unit_len..];
        total += number * nanos_per_unit;
    }
    Ok(Duration::from_nanos(total.round() as u64))
}

/// go-humanize's `Bytes`: SI units, one decimal below 10 (`20 kB`, `4.1 MB`).
pub fn humanize_bytes(s: u64) -> String {
    const SIZES: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if s < 10 {
        return format!("{s} B");
    }
    let e = ((s as f64).ln() / 1000f64.ln()).floor();
    let suffix = SIZES[(e as usize).min(SIZES.len() - 1)];
    let val = ((s as f64) / 1000f64.powf(e) * 10.0 + 0.5).floor() / 10.0;
    if val < 10.0 {
        format!("{val:.1} {suffix}")
    } else {
        format!("{val:.0} {suffix}")
    }
}

/// Go's `strconv.ParseInt(s, radix, 64)` including its error text.
pub fn parse_int(s: &str, radix: u32) -> Result<i64, String> {
    i64::from_str_radix(s, radix).map_err(|e| {
        let why = match e.kind() {
            std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => {
                "value out of range"
            }
            _ => "invalid syntax",
        };
        format!("strconv.ParseInt: parsing {}: {why}", quote(s.as_bytes()))
    })
}

/// A JSON string literal as Go's `encoding/json` writes it (HTML-safe escapes included).
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A `[]byte` field as Go's `encoding/json` writes it: standard base64 in quotes.
pub fn json_bytes(b: &[u8]) -> String {
    format!(
        "\"{}\"",
        base64::engine::general_purpose::STANDARD.encode(b)
    )
}

/// Builds one JSON object field by field, in struct order, skipping zero values the way Go's
/// `omitempty` does (etcd's generated structs tag every field `omitempty`).
#[derive(Default)]
pub struct JsonObject {
    body: String,
}

impl JsonObject {
    pub fn new() -> Self {
        Self::default()
    }

    /// A field whose value is already JSON; always written.
    pub fn raw(mut self, name: &str, value: &str) -> Self {
        if !self.body.is_empty() {
            self.body.push(',');
        }
        let _ = write!(self.body, "\"{name}\":{value}");
        self
    }

    pub fn int(self, name: &str, v: i64) -> Self {
        if v == 0 {
            self
        } else {
            self.raw(name, &v.to_string())
        }
    }

    pub fn uint(self, name: &str, v: u64) -> Self {
        if v == 0 {
            self
        } else {
            self.raw(name, &v.to_string())
        }
    }

    pub fn bool(self, name: &str, v: bool) -> Self {
        if v {
            self.raw(name, "true")
        } else {
            self
        }
    }

    pub fn bytes(self, name: &str, v: &[u8]) -> Self {
        if v.is_empty() {
            self
        } else {
            self.raw(name, &json_bytes(v))
        }
    }

    pub fn string(self, name: &str, v: &str) -> Self {
        if v.is_empty() {
            self
        } else {
            self.raw(name, &json_string(v))
        }
    }

    pub fn object(self, name: &str, v: Option<String>) -> Self {
        match v {
            Some(v) => self.raw(name, &v),
            None => self,
        }
    }

    pub fn array(self, name: &str, items: &[String]) -> Self {
        if items.is_empty() {
            self
        } else {
            self.raw(name, &format!("[{}]", items.join(",")))
        }
    }

    pub fn finish(self) -> String {
        format!("{{{}}}", self.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_matches_go_strconv() {
        assert_eq!(quote(b"k1"), r#""k1""#);
        assert_eq!(
            quote(b"a<b>&\x01\xc3\xa9\xff \"q\""),
            r#""a<b>&\x01é\xff \"q\"""#
        );
        assert_eq!(quote(b"tab\there\n\\"), r#""tab\there\n\\""#);
        assert_eq!(quote("\u{a0}\u{feff}".as_bytes()), r#""\u00a0\ufeff""#);
        assert_eq!(quote(b"\x7f"), r#""\x7f""#);
    }

    #[test]
    fn duration_matches_go() {
        assert_eq!(duration(Duration::from_nanos(1_933_110)), "1.93311ms");
        assert_eq!(duration(Duration::from_nanos(0)), "0s");
        assert_eq!(duration(Duration::from_nanos(999)), "999ns");
        assert_eq!(duration(Duration::from_nanos(1_500)), "1.5µs");
        assert_eq!(duration(Duration::from_secs(2)), "2s");
        assert_eq!(duration(Duration::from_millis(90_500)), "1m30.5s");
        assert_eq!(duration(Duration::from_secs(3600)), "1h0m0s");
    }

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(
            parse_duration("5"),
            Err(r#"time: missing unit in duration "5""#.into())
        );
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn humanize_matches_go_humanize() {
        assert_eq!(humanize_bytes(0), "0 B");
        assert_eq!(humanize_bytes(9), "9 B");
        assert_eq!(humanize_bytes(20480), "20 kB");
        assert_eq!(humanize_bytes(4096), "4.1 kB");
        assert_eq!(humanize_bytes(1_000_000), "1.0 MB");
        assert_eq!(humanize_bytes(25_165_824), "25 MB");
    }

    #[test]
    fn parse_int_reports_like_go() {
        assert_eq!(parse_int("ff", 16), Ok(255));
        assert_eq!(
            parse_int("zz", 16),
            Err(r#"strconv.ParseInt: parsing "zz": invalid syntax"#.into())
        );
        assert_eq!(
            parse_int("99999999999999999999", 10),
            Err(r#"strconv.ParseInt: parsing "99999999999999999999": value out of range"#.into())
        );
    }

    #[test]
    fn json_escapes_like_go() {
        assert_eq!(
            json_string("a<b>&\"\\\n\u{1}"),
            r#""a\u003cb\u003e\u0026\"\\\n\u0001""#
        );
        let obj = JsonObject::new()
            .int("zero", 0)
            .int("n", 5)
            .bool("f", false)
            .bytes("k", b"foo");
        assert_eq!(obj.finish(), r#"{"n":5,"k":"Zm9v"}"#);
    }
}
