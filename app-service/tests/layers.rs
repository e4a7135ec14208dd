//! The module layering of the app, kept by a test: each module imports only modules of
//! lower layers, so a reader follows a request downwards and never back up.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

/// From the top (the composition root) down. A module may import any module below its own
/// layer, none above it and none beside it.
const LAYERS: &[&[&str]] = &[
    &["lib", "main"],
    &["routes"],
    &["api", "ui", "middleware"],
    &["state", "error"],
    &["classify"],
    &["cache", "metrics"],
    &["model_client"],
    &["model_channel"],
    &["config"],
];

fn layer(module: &str) -> usize {
    LAYERS.iter().position(|l| l.contains(&module)).unwrap_or_else(|| panic!("module {module} is in no layer"))
}

/// The crate modules named by `crate::` paths in a source file.
fn imports(source: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (i, _) in source.match_indices("crate::") {
        let rest = &source[i + "crate::".len()..];
        let rest = rest.trim_start_matches(['{', ' ', '\n']);
        // `crate::{a::X, b, c::{Y}}` or `crate::a::X`
        if source[i..].starts_with("crate::{") {
            let group = &source[i + "crate::{".len()..];
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|&(_, c)| {
                    depth += i32::from(c == '{') - i32::from(c == '}');
                    depth == 0
                })
                .map_or(group.len(), |(j, _)| j);
            let mut level = 0;
            let mut item = String::new();
            for c in group[..end].chars().chain([',']) {
                match c {
                    '{' => level += 1,
                    '}' => level -= 1,
                    ',' if level == 0 => {
                        let name: String =
                            item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                        if !name.is_empty() {
                            found.push(name);
                        }
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if level == 0 {
                    item.push(c);
                }
            }
        } else {
            found.push(rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect());
        }
    }
    found
}

/// The crate's source files, each with the module it belongs to: a file in `src/` is a
/// module of its own, and every file under a module's folder (`src/model_channel/`) is
/// part of that module (its files import each other through `super::`, not `crate::`).
fn sources(src: &Path) -> Vec<(String, PathBuf)> {
    fn files(path: PathBuf, found: &mut Vec<PathBuf>) {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                files(entry.unwrap().path(), found);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let module = path.file_stem().unwrap().to_str().unwrap().to_string();
        let mut module_files = Vec::new();
        files(path, &mut module_files);
        found.extend(module_files.into_iter().map(|file| (module.clone(), file)));
    }
    found
}

#[test]
fn modules_import_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = BTreeSet::new();
    for (module, path) in sources(&src) {
        let source = std::fs::read_to_string(&path).unwrap();
        for imported in imports(&source) {
            assert!(
                layer(&imported) > layer(&module),
                "{} (of {module}) imports crate::{imported}, which is not below it (layers: {LAYERS:?})",
                path.strip_prefix(&src).unwrap().display()
            );
        }
        checked.insert(module);
    }
    assert!(checked.len() >= 13, "only {} modules found in {}: {checked:?}", checked.len(), src.display());
}

#[test]
fn the_check_sees_grouped_and_single_imports() {
    assert_eq!(imports("use crate::{a::X, b, c::{Y, Z}};\nfn f() { crate::d::g() }"), ["a", "b", "c", "d"]);
}
