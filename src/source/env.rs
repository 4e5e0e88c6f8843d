//! `${NAME}` interpolation from the environment in `parlance.yaml`, applied to every
//! scalar, so secrets stay out of git. A replaced value is text unless the schema wants a
//! number or a boolean there (`compile::interpolated`), so `${DELAY:-500}` is a number and
//! an all-digit phone number id stays text. Flow files are not interpolated: there
//! `${{ vars.total }}` is how a designer writes a dollar price, and flows read the
//! environment as `env.NAME` at run time.
//!
//! - `${NAME}`: the variable's value; unset or empty is an error naming it.
//! - `${NAME:-default}`: the default when the variable is unset or empty.
//! - `$${`: a literal `${` (for text that must contain it).

use crate::diag::Code;

/// Where variable values come from: the process environment, or a map in tests.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Why a reference could not be replaced: the code, a message and a hint.
pub type EnvError = (Code, String, Option<String>);

/// Replaces every reference in `text`.
pub fn interpolate(text: &str, env: EnvLookup<'_>) -> Result<String, EnvError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let Some(end) = tail.find('}') else {
                return Err((
                    Code::InvalidValue,
                    "unterminated ${...} reference".into(),
                    Some("close it with `}`, or write $${ for a literal ${".into()),
                ));
            };
            let inner = &tail[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if !is_var_name(name) {
                return Err((
                    Code::InvalidValue,
                    format!("\"{name}\" is not a valid environment variable name"),
                    Some("names are letters, digits and _, e.g. ${WA_ACCESS_TOKEN}; write $${ for a literal ${".into()),
                ));
            }
            match (env(name).filter(|v| !v.is_empty()), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                // Set but empty is most often a deployment mistake (an unfilled secret);
                // a bot that means "empty" says so with `${NAME:-}`.
                (None, None) if env(name).is_some() => {
                    return Err((
                        Code::EnvMissing,
                        format!("environment variable {name} is set but empty"),
                        Some(format!(
                            "give {name} a value, or write ${{{name}:-}} where an empty value is meant"
                        )),
                    ));
                }
                (None, None) => {
                    return Err((
                        Code::EnvMissing,
                        format!("environment variable {name} is not set"),
                        Some(format!(
                            "set {name}, or give a default with ${{{name}:-default}}"
                        )),
                    ));
                }
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("secret".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn replaces_references_and_defaults() {
        assert_eq!(
            interpolate("Bearer ${TOKEN}", &env).unwrap(),
            "Bearer secret"
        );
        assert_eq!(interpolate("${NOPE:-500}", &env).unwrap(), "500");
        assert_eq!(interpolate("${EMPTY:-x}", &env).unwrap(), "x");
        assert_eq!(interpolate("${EMPTY:-}", &env).unwrap(), "");
        assert_eq!(interpolate("${NOPE:-}", &env).unwrap(), "");
        assert_eq!(
            interpolate("costs $5, $${literal}", &env).unwrap(),
            "costs $5, ${literal}"
        );
    }

    #[test]
    fn missing_variables_are_named() {
        let (code, message, hint) = interpolate("${WA_TOKEN}", &env).unwrap_err();
        assert_eq!(code, Code::EnvMissing);
        assert_eq!(message, "environment variable WA_TOKEN is not set");
        assert_eq!(
            hint.unwrap(),
            "set WA_TOKEN, or give a default with ${WA_TOKEN:-default}"
        );
        let (code, message, hint) = interpolate("${EMPTY}", &env).unwrap_err();
        assert_eq!(code, Code::EnvMissing);
        assert_eq!(message, "environment variable EMPTY is set but empty");
        assert_eq!(
            hint.unwrap(),
            "give EMPTY a value, or write ${EMPTY:-} where an empty value is meant"
        );
        assert!(interpolate("${unclosed", &env).is_err());
        assert_eq!(
            interpolate("${1BAD}", &env).unwrap_err().0,
            Code::InvalidValue
        );
    }
}
