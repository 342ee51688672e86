//! Plain (unencrypted) scalar resolution as sops sees it: YAML plain scalars are typed the way
//! `gopkg.in/yaml.v3` types them (null, bool, int, float, timestamp, else string), and each typed
//! value is rendered for the MAC the way sops' `ToBytes` does (`True`/`False`, decimal ints,
//! `strconv.FormatFloat(v, 'f', -1, 64)`, `time.MarshalText`).

use std::sync::OnceLock;

use regex::Regex;

use crate::tree::{Node, ValueType};

/// Go's `strconv.FormatFloat(v, 'f', -1, 64)`: Rust's `Display` for finite `f64` prints the same
/// shortest round-trip digits without exponent.
pub(crate) fn go_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{f}")
    }
}

fn plain(kind: ValueType, mac: String, text: &str) -> Node {
    Node::Plain {
        kind,
        mac,
        text: text.to_owned(),
    }
}

/// yaml.v3 resolution of a plain (unquoted, untagged) scalar.
pub(crate) fn resolve_yaml_plain(s: &str) -> Node {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Node::Null,
        "true" | "True" | "TRUE" => return plain(ValueType::Bool, "True".into(), s),
        "false" | "False" | "FALSE" => return plain(ValueType::Bool, "False".into(), s),
        ".nan" | ".NaN" | ".NAN" => return plain(ValueType::Float, "NaN".into(), s),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return plain(ValueType::Float, "+Inf".into(), s);
        }
        "-.inf" | "-.Inf" | "-.INF" => return plain(ValueType::Float, "-Inf".into(), s),
        _ => {}
    }
    let first = s.as_bytes()[0];
    if first.is_ascii_digit() || matches!(first, b'+' | b'-' | b'.') {
        if let Some(t) = yaml_timestamp(s) {
            return plain(ValueType::Time, t, s);
        }
        let p: String = s.chars().filter(|&c| c != '_').collect();
        if let Some(i) = go_parse_int(&p) {
            return plain(ValueType::Int, i.to_string(), s);
        }
        if float_re().is_match(&p)
            && let Ok(f) = p.parse::<f64>()
        {
            return plain(ValueType::Float, go_float(f), s);
        }
    }
    Node::Str(s.to_owned())
}

fn float_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$").expect("static regex")
    })
}

/// `strconv.ParseInt(s, 0, 64)`: sign, then `0x`/`0o`/`0b` prefixes, a leading `0` means octal.
pub(crate) fn go_parse_int(s: &str) -> Option<i64> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) =
        if let Some(d) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
            (16, d)
        } else if let Some(d) = body.strip_prefix("0o").or_else(|| body.strip_prefix("0O")) {
            (8, d)
        } else if let Some(d) = body.strip_prefix("0b").or_else(|| body.strip_prefix("0B")) {
            (2, d)
        } else if body.len() > 1 && body.starts_with('0') {
            (8, &body[1..])
        } else {
            (10, body)
        };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let mag = u64::from_str_radix(digits, radix).ok()?;
    if neg {
        if mag <= i64::MAX as u64 + 1 {
            Some((mag as i128).wrapping_neg() as i64)
        } else {
            None
        }
    } else {
        i64::try_from(mag).ok()
    }
}

fn ts_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"^([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})(?:(?:([Tt])|( ))([0-9]{1,2}):([0-9]{1,2}):([0-9]{1,2})(?:\.([0-9]{1,9}))?(Z|[+-][0-9]{2}:[0-9]{2})?)?$",
        )
        .expect("static regex")
    })
}

/// yaml.v3 `parseTimestamp` followed by Go `time.MarshalText` (RFC 3339 with nanoseconds, trailing
/// zeros dropped, `Z` for a zero offset).
pub(crate) fn yaml_timestamp(s: &str) -> Option<String> {
    let c = ts_re().captures(s)?;
    let num = |i: usize| c.get(i).map(|m| m.as_str().parse::<u32>().unwrap_or(99));
    let (y, mo, d) = (num(1)?, num(2)?, num(3)?);
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) {
        return None;
    }
    let Some(h) = num(6) else {
        return Some(format!("{y:04}-{mo:02}-{d:02}T00:00:00Z"));
    };
    let (mi, se) = (num(7)?, num(8)?);
    if h > 23 || mi > 59 || se > 59 {
        return None;
    }
    let zone = c.get(10).map(|m| m.as_str());
    // "T" layouts require a zone; the space layout has none.
    match (c.get(4).is_some(), zone) {
        (true, None) | (false, Some(_)) => return None,
        _ => {}
    }
    let frac = c
        .get(9)
        .map(|m| m.as_str().trim_end_matches('0'))
        .filter(|f| !f.is_empty())
        .map(|f| format!(".{f}"))
        .unwrap_or_default();
    let zone = match zone {
        None | Some("Z") | Some("+00:00") | Some("-00:00") => "Z",
        Some(z) => z,
    };
    Some(format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{se:02}{frac}{zone}"
    ))
}

fn days_in_month(y: u32, m: u32) -> u32 {
    match m {
        2 if (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: Node) -> String {
        match n {
            Node::Plain { mac, .. } => mac,
            Node::Str(s) => format!("str:{s}"),
            Node::Null => "null".into(),
            _ => "?".into(),
        }
    }

    #[test]
    fn yaml_plain_scalars_resolve_like_yaml_v3() {
        assert_eq!(mac(resolve_yaml_plain("22")), "22");
        assert_eq!(mac(resolve_yaml_plain("0x1F")), "31");
        assert_eq!(mac(resolve_yaml_plain("017")), "15");
        assert_eq!(mac(resolve_yaml_plain("1_000")), "1000");
        assert_eq!(mac(resolve_yaml_plain("1.5")), "1.5");
        assert_eq!(mac(resolve_yaml_plain("1e3")), "1000");
        assert_eq!(mac(resolve_yaml_plain("true")), "True");
        assert_eq!(mac(resolve_yaml_plain("FALSE")), "False");
        assert_eq!(mac(resolve_yaml_plain("yes")), "str:yes");
        assert_eq!(mac(resolve_yaml_plain("~")), "null");
        assert_eq!(
            mac(resolve_yaml_plain("2024-01-02")),
            "2024-01-02T00:00:00Z"
        );
        assert_eq!(
            mac(resolve_yaml_plain("2024-1-2T3:04:05.500Z")),
            "2024-01-02T03:04:05.5Z"
        );
        assert_eq!(
            mac(resolve_yaml_plain("2024-01-02 03:04:05")),
            "2024-01-02T03:04:05Z"
        );
        assert_eq!(
            mac(resolve_yaml_plain("2024-01-02T03:04:05+02:00")),
            "2024-01-02T03:04:05+02:00"
        );
        assert_eq!(mac(resolve_yaml_plain("2024-02-30")), "str:2024-02-30");
        assert_eq!(mac(resolve_yaml_plain("1.2.3")), "str:1.2.3");
        assert_eq!(
            mac(resolve_yaml_plain("-9223372036854775808")),
            "-9223372036854775808"
        );
    }

    #[test]
    fn go_float_formatting() {
        assert_eq!(go_float(1e21), "1000000000000000000000");
        assert_eq!(go_float(2.5e-5), "0.000025");
        assert_eq!(go_float(22.0), "22");
        assert_eq!(go_float(-0.0), "-0");
    }
}
