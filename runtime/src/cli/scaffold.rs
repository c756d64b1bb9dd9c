//! `edge plugin new <name>`: a plugin crate in the plugins workspace that builds and passes
//! its own fixtures unchanged, so a vendor engineer starts from something that works.

use anyhow::{Context, bail};
use std::path::Path;

const TEMPLATES: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../../templates/plugin/Cargo.toml.tmpl")),
    ("src/lib.rs", include_str!("../../templates/plugin/lib.rs.tmpl")),
    ("fixtures/example.payload.json", include_str!("../../templates/plugin/example.payload.json")),
    ("fixtures/example.expected.json", include_str!("../../templates/plugin/example.expected.json")),
    ("fixtures/missing-y.payload.json", include_str!("../../templates/plugin/missing-y.payload.json")),
    ("fixtures/missing-y.expected.json", include_str!("../../templates/plugin/missing-y.expected.json")),
];

pub fn new_plugin(name: &str, workspace: &Path) -> anyhow::Result<()> {
    check_name(name)?;
    let manifest = workspace.join("Cargo.toml");
    let workspace_toml = std::fs::read_to_string(&manifest).with_context(|| {
        format!("{} is not the plugins workspace (no readable Cargo.toml); pass --workspace", workspace.display())
    })?;
    let crate_dir = workspace.join(name);
    if crate_dir.exists() {
        bail!("{} already exists", crate_dir.display());
    }
    let members =
        add_member(&workspace_toml, name).with_context(|| format!("cannot add {name} to {}", manifest.display()))?;
    for (file, template) in TEMPLATES {
        let path = crate_dir.join(file);
        std::fs::create_dir_all(path.parent().expect("template paths have a parent"))?;
        std::fs::write(&path, template.replace("{{name}}", name))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    std::fs::write(&manifest, members).with_context(|| format!("cannot write {}", manifest.display()))?;
    println!("created {} (added to {})", crate_dir.display(), manifest.display());
    println!(
        "next: scripts/build-plugins && edge plugin test {0}/dist/{name}.wasm {0}/{name}/fixtures",
        workspace.display()
    );
    Ok(())
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = name.len() <= 40
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !ok || ["sdk", "target", "dist"].contains(&name) {
        bail!("`{name}` is not a usable plugin name: use lower-case letters, digits and dashes, e.g. acme-agv");
    }
    Ok(())
}

/// The workspace manifest with `name` appended to `members = [...]`.
fn add_member(toml: &str, name: &str) -> anyhow::Result<String> {
    let start = toml.find("members = [").context("no `members = [` list")?;
    let close = start + toml[start..].find(']').context("unterminated members list")?;
    let head = toml[..close].trim_end().trim_end_matches(',');
    let separator = if head.ends_with('[') { "" } else { ", " };
    Ok(format!("{head}{separator}\"{name}\"{}", &toml[close..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_to_members() {
        let toml = "[workspace]\nmembers = [\"sdk\", \"a\"]\n\n[x]\n";
        assert_eq!(add_member(toml, "b").unwrap(), "[workspace]\nmembers = [\"sdk\", \"a\", \"b\"]\n\n[x]\n");
    }

    #[test]
    fn refuses_bad_names() {
        assert!(check_name("acme-agv").is_ok());
        for bad in ["Acme", "1abc", "a_b", "sdk", "a-", ""] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
