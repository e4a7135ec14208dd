//! Typed settings from environment variables (12-factor). A variable that is unset, empty
//! or only whitespace means "use the default"; a value that does not parse is an error
//! that names the variable and says what it got.

use std::{str::FromStr, time::Duration};

/// The trimmed value of `name`, or `None` when it is unset or blank.
pub fn text(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// `name` parsed as `T`, or `default` when unset.
pub fn parse<T: FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match text(name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|e| anyhow::anyhow!("{name}={v:?} is not valid: {e}")),
    }
}

/// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`, any case), or `default` when unset.
pub fn flag(name: &str, default: bool) -> anyhow::Result<bool> {
    match text(name).map(|v| v.to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) => match v.as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => anyhow::bail!("{name}={v:?} is not valid: use true or false"),
        },
    }
}

/// Milliseconds in `name`, or `default` when unset.
pub fn millis(name: &str, default: Duration) -> anyhow::Result<Duration> {
    Ok(Duration::from_millis(parse(name, default.as_millis() as u64)?))
}

/// Seconds in `name`, or `default` when unset.
pub fn secs(name: &str, default: Duration) -> anyhow::Result<Duration> {
    Ok(Duration::from_secs(parse(name, default.as_secs())?))
}
