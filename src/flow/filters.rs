//! The template filters Parlance adds to minijinja's own (FLOWS.md): money, dates,
//! WhatsApp formatting, and truncation that counts characters.

use chrono::{DateTime, NaiveDate, Utc};
use minijinja::value::Value;
use minijinja::{Error, ErrorKind};

/// `{{ 9.5 | currency('EUR') }}` → `€9.50`; two decimals, the symbol for common
/// currencies, otherwise the code after the amount (`9.50 CHF`).
pub fn currency(value: Value, code: Option<String>) -> Result<String, Error> {
    let amount = f64::try_from(value.clone()).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("currency needs a number, got {value}"),
        )
    })?;
    let code = code.unwrap_or_else(|| "EUR".into()).to_uppercase();
    let digits = format!("{:.2}", amount.abs());
    let sign = if amount < 0.0 { "-" } else { "" };
    Ok(match code.as_str() {
        "EUR" => format!("{sign}€{digits}"),
        "USD" => format!("{sign}${digits}"),
        "GBP" => format!("{sign}£{digits}"),
        "JPY" => format!("{sign}¥{:.0}", amount.abs()),
        "INR" => format!("{sign}₹{digits}"),
        "BRL" => format!("{sign}R${digits}"),
        other => format!("{sign}{digits} {other}"),
    })
}

/// `{{ now | date('%d.%m.%Y') }}`: formats a time given as Unix seconds, an RFC 3339
/// timestamp (like `now`) or a `YYYY-MM-DD` date. The format is strftime's (default
/// `%Y-%m-%d`).
pub fn date(value: Value, format: Option<String>) -> Result<String, Error> {
    let bad = || {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("date needs a time, got {value}"),
        )
    };
    let time: DateTime<Utc> = if let Some(s) = value.as_str() {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .or_else(|_| {
                NaiveDate::parse_from_str(s, "%Y-%m-%d")
                    .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
            })
            .map_err(|_| bad())?
    } else {
        let secs = i64::try_from(value.clone()).map_err(|_| bad())?;
        DateTime::from_timestamp(secs, 0).ok_or_else(bad)?
    };
    let format = format.unwrap_or_else(|| "%Y-%m-%d".into());
    // chrono panics on a bad format when displayed; check it first.
    let items: Vec<_> = chrono::format::StrftimeItems::new(&format).collect();
    if items
        .iter()
        .any(|i| matches!(i, chrono::format::Item::Error))
    {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("\"{format}\" is not a date format"),
        ));
    }
    Ok(time.format_with_items(items.into_iter()).to_string())
}

/// `*bold*` in WhatsApp.
pub fn wa_bold(text: String) -> String {
    wrap(&text, "*")
}

/// `_italic_` in WhatsApp.
pub fn wa_italic(text: String) -> String {
    wrap(&text, "_")
}

/// ```` ```monospace``` ```` in WhatsApp.
pub fn wa_code(text: String) -> String {
    wrap(&text, "```")
}

/// WhatsApp only formats a marker that hugs the text: `*bold*`, not `* bold *`.
fn wrap(text: &str, marker: &str) -> String {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return text.to_string();
    }
    let start = text.len() - text.trim_start().len();
    let end = start + trimmed.len();
    format!(
        "{}{marker}{trimmed}{marker}{}",
        &text[..start],
        &text[end..]
    )
}

/// `{{ vars.note | truncate_chars(20) }}`: at most `n` characters (not bytes), ending in
/// `…` (or the given end) when shortened.
pub fn truncate_chars(text: String, n: usize, end: Option<String>) -> String {
    if text.chars().count() <= n {
        return text;
    }
    let end = end.unwrap_or_else(|| "…".into());
    let keep = n.saturating_sub(end.chars().count());
    let mut out: String = text.chars().take(keep).collect();
    out.push_str(&end);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_formats_two_decimals_with_symbols() {
        assert_eq!(
            currency(Value::from(9.5), Some("eur".into())).unwrap(),
            "€9.50"
        );
        assert_eq!(
            currency(Value::from(-3), Some("USD".into())).unwrap(),
            "-$3.00"
        );
        assert_eq!(
            currency(Value::from(12), Some("CHF".into())).unwrap(),
            "12.00 CHF"
        );
        assert!(currency(Value::from("x"), None).is_err());
    }

    #[test]
    fn dates_from_seconds_rfc3339_and_days() {
        assert_eq!(date(Value::from(0), None).unwrap(), "1970-01-01");
        assert_eq!(
            date(
                Value::from("2026-03-14T09:30:00Z"),
                Some("%d.%m.%Y %H:%M".into())
            )
            .unwrap(),
            "14.03.2026 09:30"
        );
        assert_eq!(
            date(Value::from("2026-03-14"), Some("%A".into())).unwrap(),
            "Saturday"
        );
        assert!(date(Value::from("soon"), None).is_err());
        assert!(date(Value::from(0), Some("%Q".into())).is_err());
    }

    #[test]
    fn whatsapp_markers_hug_the_text() {
        assert_eq!(wa_bold(" total ".into()), " *total* ");
        assert_eq!(wa_italic("a b".into()), "_a b_");
        assert_eq!(wa_code("x".into()), "```x```");
        assert_eq!(wa_bold("  ".into()), "  ");
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate_chars("Grüße aus Köln".into(), 8, None), "Grüße a…");
        assert_eq!(truncate_chars("short".into(), 8, None), "short");
        assert_eq!(
            truncate_chars("abcdef".into(), 4, Some("..".into())),
            "ab.."
        );
    }
}
