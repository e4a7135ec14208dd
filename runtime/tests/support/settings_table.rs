//! Checks a service's configuration against its settings tables in docs/contracts.md, the
//! one place users read them: every variable the configuration reads is documented, every
//! documented one is read, and every default the tables state as a value is the default.
//! Each service's `tests/settings_table.rs` includes this file with its own `Config`.

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet},
};

pub const CONTRACTS: &str = include_str!("../../../docs/contracts.md");
const SECTION: &str = "## Environment variables";
/// Read by a library, not by the configuration: the log filter (tracing's `EnvFilter`).
const READ_ELSEWHERE: [&str; 1] = ["RUST_LOG"];

/// A configuration read from a lookup: its `Debug` text, or the refusal.
pub type Read<'a> = &'a dyn Fn(&dyn Fn(&str) -> Option<String>) -> Result<String, String>;

/// The section of the contracts that documents the settings.
fn section() -> &'static str {
    let start = CONTRACTS.find(SECTION).expect("docs/contracts.md has a settings section");
    let rest = &CONTRACTS[start + SECTION.len()..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

fn backticked(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// Each variable of the table that follows the line `heading`, with the default its row states
/// for `service` when that is a value (`None` for prose such as "half the cores").
pub fn table(heading: &str, service: &str) -> BTreeMap<String, Option<String>> {
    let body = section().split_once(&format!("\n{heading}\n")).unwrap_or_else(|| panic!("no table {heading:?}")).1;
    let mut rows = BTreeMap::new();
    for line in body.lines().skip(2).take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (names, default) = (backticked(cells[1]), cells[2]);
        let values = backticked(default);
        let prose = default.replace('`', "").replace(", ", "").len() != values.iter().map(|v| v.len()).sum::<usize>();
        for (i, name) in names.iter().enumerate() {
            let value = if !prose && values.len() == names.len() {
                Some(values[i].to_string())
            } else {
                // "app `1024`, model `128`": a value each service.
                default
                    .split(", ")
                    .find_map(|part| part.strip_prefix(&format!("{service} `"))?.strip_suffix('`'))
                    .map(str::to_string)
            };
            rows.insert(name.to_string(), value);
        }
    }
    assert!(!rows.is_empty(), "the table under {heading:?} has no rows");
    rows
}

/// Checks `read` (the service's configuration) against the tables under `headings`.
pub fn check(service: &str, headings: &[&str], read: Read) {
    let mut documented = BTreeMap::new();
    for heading in headings {
        documented.extend(table(heading, service));
    }
    let asked = RefCell::new(BTreeSet::new());
    let default = read(&|name| {
        asked.borrow_mut().insert(name.to_string());
        None
    })
    .expect("the defaults are valid");
    let asked = asked.into_inner();

    let mentioned: BTreeSet<&str> = backticked(section()).into_iter().collect();
    let undocumented: Vec<_> = asked.iter().filter(|n| !mentioned.contains(n.as_str())).collect();
    assert!(undocumented.is_empty(), "{service} reads {undocumented:?}, which docs/contracts.md does not name");
    let unread: Vec<_> =
        documented.keys().filter(|n| !asked.contains(*n) && !READ_ELSEWHERE.contains(&n.as_str())).collect();
    assert!(unread.is_empty(), "docs/contracts.md documents {unread:?} for {service}, which it does not read");

    let mut checked = 0;
    for (name, value) in documented.iter().filter(|(n, _)| !READ_ELSEWHERE.contains(&n.as_str())) {
        let Some(value) = value else { continue };
        let set = read(&|asked| (asked == name).then(|| value.clone()))
            .unwrap_or_else(|e| panic!("{name}={value:?} (its documented default) is refused: {e}"));
        assert_eq!(set, default, "{service}: docs/contracts.md says {name} defaults to `{value}`; the default differs");
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} documented defaults of {service} were values");
    println!(
        "{service}: {} variables read, all documented; {checked} documented defaults equal the defaults",
        asked.len()
    );
}

/// The test itself, for a service's `Config` (with `read(&Env)` and `Default`), under the
/// name `service` and the headings of its tables.
#[macro_export]
macro_rules! settings_table_test {
    ($config:ty, $service:literal, $headings:expr) => {
        #[test]
        fn the_documented_settings_are_the_ones_read_with_their_defaults() {
            use sms_runtime::settings::Env;
            assert_eq!(
                format!("{:?}", <$config>::read(&Env::new(|_: &str| None)).unwrap()),
                format!("{:?}", <$config>::default()),
                "an empty environment gives Config::default()"
            );
            settings_table::check($service, &$headings, &|lookup| {
                <$config>::read(&Env::new(lookup)).map(|c| format!("{c:?}")).map_err(|e| format!("{e:#}"))
            });
        }
    };
}
