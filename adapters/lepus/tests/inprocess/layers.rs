//! The layer list in README.md ("Layers of `lepus`") holds: no module of the crate imports
//! one that stands above it. Reads the README and every source file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Module name -> layer number, from README's numbered list.
fn layers() -> HashMap<String, usize> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let section = readme
        .split("### Layers of `lepus`")
        .nth(1)
        .expect("README has the layer list");
    let mut map = HashMap::new();
    for line in section.lines() {
        let Some((number, rest)) = line.split_once(". ") else {
            continue;
        };
        let Ok(layer) = number.trim().parse::<usize>() else {
            continue;
        };
        let names = rest.split(':').next().unwrap_or("");
        for name in names.split(',') {
            let name = name.trim().trim_matches('`');
            if !name.is_empty() {
                map.insert(name.to_owned(), layer);
            }
        }
        if line.starts_with("6.") {
            break;
        }
    }
    map
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_module_imports_one_above_it() {
    let layers = layers();
    assert!(
        layers.len() >= 20,
        "README's layer list was read: {layers:?}"
    );
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut violations = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        let module = Path::new(first)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if module == "lib" {
            continue;
        }
        let Some(&own) = layers.get(&module) else {
            violations.push(format!(
                "{module} ({}) is not in README's layer list",
                relative.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for piece in line.split("crate::").skip(1) {
                let target: String = piece
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if target == "core" || target.is_empty() || target == module {
                    continue;
                }
                // Items re-exported at the crate root (`crate::Worker`) name no module.
                if target.chars().next().is_some_and(char::is_uppercase) {
                    continue;
                }
                match layers.get(&target) {
                    Some(&theirs) if theirs > own => violations.push(format!(
                        "{}:{}: {module} (layer {own}) imports {target} (layer {theirs})",
                        relative.display(),
                        i + 1
                    )),
                    Some(_) => {}
                    None => violations.push(format!(
                        "{}:{}: crate::{target} is not in README's layer list",
                        relative.display(),
                        i + 1
                    )),
                }
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}
