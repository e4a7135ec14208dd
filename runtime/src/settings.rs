//! Typed settings from environment variables (12-factor). A variable that is unset, empty
//! or only whitespace means "use the default"; a value that does not parse is an error
//! that names the variable and says what it got.
//!
//! [`Env::process`] reads the process environment; [`Env::new`] the same over any lookup
//! (the tests give it a table instead of changing the process's environment, which every
//! thread shares, or record which names a configuration reads).

use std::{str::FromStr, time::Duration};

/// Where settings are read from: a lookup of a variable's raw value by name.
#[derive(Clone, Copy)]
pub struct Env<L> {
    lookup: L,
}

impl Env<fn(&str) -> Option<String>> {
    /// The process environment (a value that is not UTF-8 counts as unset).
    pub fn process() -> Self {
        Env { lookup: |name| std::env::var(name).ok() }
    }
}

impl<L: Fn(&str) -> Option<String>> Env<L> {
    pub fn new(lookup: L) -> Self {
        Env { lookup }
    }

    /// The trimmed value of `name`, or `None` when it is unset or blank.
    pub fn text(&self, name: &str) -> Option<String> {
        (self.lookup)(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
    }

    /// `name` parsed as `T`, or `default` when unset.
    pub fn parse<T: FromStr>(&self, name: &str, default: T) -> anyhow::Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.text(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e| anyhow::anyhow!("{name}={v:?} is not valid: {e}")),
        }
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`, any case), or `default` when unset.
    pub fn flag(&self, name: &str, default: bool) -> anyhow::Result<bool> {
        match self.text(name).map(|v| v.to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) => match v.as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => anyhow::bail!("{name}={v:?} is not valid: use true or false"),
            },
        }
    }

    /// Milliseconds in `name`, or `default` when unset.
    pub fn millis(&self, name: &str, default: Duration) -> anyhow::Result<Duration> {
        Ok(Duration::from_millis(self.parse(name, default.as_millis() as u64)?))
    }

    /// Seconds in `name`, or `default` when unset.
    pub fn secs(&self, name: &str, default: Duration) -> anyhow::Result<Duration> {
        Ok(Duration::from_secs(self.parse(name, default.as_secs())?))
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    /// An environment holding exactly `vars`.
    fn env(vars: &[(&str, &str)]) -> Env<impl Fn(&str) -> Option<String>> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Env::new(move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    fn refusal<T: std::fmt::Debug>(result: anyhow::Result<T>) -> String {
        format!("{:#}", result.expect_err("a refusal"))
    }

    #[test]
    fn unset_empty_and_blank_values_mean_the_default() {
        let unset: [&[(&str, &str)]; 3] = [&[], &[("X", "")], &[("X", "  \t\n ")]];
        for vars in unset {
            let e = env(vars);
            assert_eq!(e.text("X"), None, "{vars:?}");
            assert_eq!(e.parse("X", 7u32).unwrap(), 7, "{vars:?}");
            assert!(e.flag("X", true).unwrap(), "{vars:?}");
            assert!(!e.flag("X", false).unwrap(), "{vars:?}");
            assert_eq!(e.millis("X", Duration::from_millis(1500)).unwrap(), Duration::from_millis(1500), "{vars:?}");
            assert_eq!(e.secs("X", Duration::from_secs(30)).unwrap(), Duration::from_secs(30), "{vars:?}");
        }
        // Another variable being set changes nothing.
        assert_eq!(env(&[("Y", "3")]).parse("X", 7u32).unwrap(), 7);
    }

    #[test]
    fn values_are_trimmed_and_parsed_as_their_type() {
        let e = env(&[
            ("APP_VERSION", "  v2\n"),
            ("MAX_CONNECTIONS", " 2048 "),
            ("HTTP_ADDR", "127.0.0.1:9090"),
            ("MODEL_TIMEOUT_MS", "250"),
            ("IDLE_TIMEOUT_SECS", "0"),
        ]);
        assert_eq!(e.text("APP_VERSION").as_deref(), Some("v2"));
        assert_eq!(e.parse("MAX_CONNECTIONS", 1024usize).unwrap(), 2048);
        assert_eq!(
            e.parse("HTTP_ADDR", SocketAddr::from(([0, 0, 0, 0], 8080))).unwrap(),
            "127.0.0.1:9090".parse().unwrap()
        );
        assert_eq!(e.millis("MODEL_TIMEOUT_MS", Duration::from_secs(1)).unwrap(), Duration::from_millis(250));
        // 0 parses (whether it is allowed is each service's `validate`).
        assert_eq!(e.secs("IDLE_TIMEOUT_SECS", Duration::from_secs(30)).unwrap(), Duration::ZERO);
    }

    #[test]
    fn every_spelling_of_a_flag() {
        for (value, want) in [
            ("true", true),
            ("TRUE", true),
            ("1", true),
            ("yes", true),
            (" Yes ", true),
            ("on", true),
            ("ON", true),
            ("false", false),
            ("False", false),
            ("0", false),
            ("no", false),
            ("NO", false),
            ("off", false),
            (" Off\t", false),
        ] {
            // The opposite default, so a value that is ignored shows.
            assert_eq!(env(&[("CACHE_ENABLED", value)]).flag("CACHE_ENABLED", !want).unwrap(), want, "{value:?}");
        }
    }

    #[test]
    fn a_value_that_does_not_parse_is_refused_naming_the_setting_and_the_value() {
        let e = env(&[
            ("MAX_CONNECTIONS", "lots"),
            ("CACHE_MAX_ENTRIES", "-1"),
            ("QUEUE_PER_WORKER", "99999999999999999999"),
            ("HTTP_ADDR", "localhost"),
            ("CACHE_ENABLED", "Maybe"),
            ("DISAGREEMENT_TEXTS", "2"),
            ("MODEL_TIMEOUT_MS", "1.5"),
            ("REQUEST_TIMEOUT_MS", "-100"),
            ("IDLE_TIMEOUT_SECS", "30s"),
            ("SHUTDOWN_TIMEOUT_SECS", "twenty"),
        ]);
        let cases = [
            (
                refusal(e.parse("MAX_CONNECTIONS", 1024usize)),
                r#"MAX_CONNECTIONS="lots" is not valid: invalid digit found in string"#,
            ),
            (
                refusal(e.parse("CACHE_MAX_ENTRIES", 10_000usize)),
                r#"CACHE_MAX_ENTRIES="-1" is not valid: invalid digit found in string"#,
            ),
            (
                refusal(e.parse("QUEUE_PER_WORKER", 64usize)),
                r#"QUEUE_PER_WORKER="99999999999999999999" is not valid: number too large to fit in target type"#,
            ),
            (
                refusal(e.parse("HTTP_ADDR", SocketAddr::from(([0, 0, 0, 0], 8080)))),
                r#"HTTP_ADDR="localhost" is not valid: invalid socket address syntax"#,
            ),
            (refusal(e.flag("CACHE_ENABLED", false)), r#"CACHE_ENABLED="maybe" is not valid: use true or false"#),
            (refusal(e.flag("DISAGREEMENT_TEXTS", false)), r#"DISAGREEMENT_TEXTS="2" is not valid: use true or false"#),
            (
                refusal(e.millis("MODEL_TIMEOUT_MS", Duration::from_secs(1))),
                r#"MODEL_TIMEOUT_MS="1.5" is not valid: invalid digit found in string"#,
            ),
            (
                refusal(e.millis("REQUEST_TIMEOUT_MS", Duration::from_secs(5))),
                r#"REQUEST_TIMEOUT_MS="-100" is not valid: invalid digit found in string"#,
            ),
            (
                refusal(e.secs("IDLE_TIMEOUT_SECS", Duration::from_secs(30))),
                r#"IDLE_TIMEOUT_SECS="30s" is not valid: invalid digit found in string"#,
            ),
            (
                refusal(e.secs("SHUTDOWN_TIMEOUT_SECS", Duration::from_secs(20))),
                r#"SHUTDOWN_TIMEOUT_SECS="twenty" is not valid: invalid digit found in string"#,
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn the_process_environment_is_read_through_the_same_code() {
        let process = Env::process();
        // A name no one sets: the default.
        let name = "SMS_RUNTIME_SETTINGS_TEST_UNSET_VARIABLE";
        assert_eq!(process.text(name), None);
        assert_eq!(process.parse(name, 5u8).unwrap(), 5);
        // PATH is set in every test run: read, not defaulted.
        let path = std::env::var("PATH").ok().map(|p| p.trim().to_string()).filter(|p| !p.is_empty());
        assert_eq!(process.text("PATH"), path);
        assert!(path.is_some(), "PATH is set for cargo test");
    }
}
