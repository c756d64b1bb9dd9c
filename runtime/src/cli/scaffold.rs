//! `edge plugin new <name>`: a plugin crate that builds and passes its own fixtures unchanged,
//! so a vendor engineer starts from something that works: in this repository's plugins
//! workspace, or standalone in the vendor's own repository (`--standalone DIR --sdk …`).

use anyhow::{Context, bail};
use std::path::Path;

/// The files every plugin crate gets.
const TEMPLATES: &[(&str, &str)] = &[
    ("src/lib.rs", include_str!("../../templates/plugin/lib.rs.tmpl")),
    ("fixtures/example.payload.json", include_str!("../../templates/plugin/example.payload.json")),
    ("fixtures/example.expected.json", include_str!("../../templates/plugin/example.expected.json")),
    ("fixtures/missing-y.payload.json", include_str!("../../templates/plugin/missing-y.payload.json")),
    ("fixtures/missing-y.expected.json", include_str!("../../templates/plugin/missing-y.expected.json")),
];

const IN_WORKSPACE: &str = include_str!("../../templates/plugin/Cargo.toml.tmpl");
const STANDALONE: &str = include_str!("../../templates/plugin/standalone.Cargo.toml.tmpl");
const STANDALONE_README: &str = include_str!("../../templates/plugin/standalone.README.md.tmpl");

/// A crate in the plugins `workspace`, added to its members.
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
    let build = "scripts/build-plugins".to_string();
    let test = format!("edge plugin test {0}/dist/{name}.wasm {0}/{name}/fixtures", workspace.display());
    let files = TEMPLATES.iter().copied().chain([("Cargo.toml", IN_WORKSPACE)]);
    write_crate(&crate_dir, files, &[("{{name}}", name), ("{{build}}", &build), ("{{test}}", &test)])?;
    std::fs::write(&manifest, members).with_context(|| format!("cannot write {}", manifest.display()))?;
    println!("created {} (added to {})", crate_dir.display(), manifest.display());
    println!("next: {build} && {test}");
    Ok(())
}

/// A crate of its own in `dir` (the vendor's repository), depending on the SDK at `sdk`: a
/// path to edge's `plugins/sdk`, or the URL of edge's git repository.
pub fn new_standalone(name: &str, dir: &Path, sdk: &str) -> anyhow::Result<()> {
    check_name(name)?;
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!("{} exists and is not empty", dir.display());
    }
    let dependency = if sdk.contains("://") || sdk.starts_with("git@") {
        format!("{{ git = {sdk:?}, package = \"edge-plugin-sdk\" }}")
    } else {
        let path = std::path::absolute(sdk)?;
        if !path.join("Cargo.toml").exists() {
            bail!("--sdk {}: not the SDK crate (edge's plugins/sdk, with its Cargo.toml)", path.display());
        }
        format!("{{ path = {:?} }}", path.display().to_string())
    };
    let build = "cargo build --release --target wasm32-wasip2".to_string();
    let test = format!("edge plugin test target/wasm32-wasip2/release/{}.wasm fixtures", name.replace('-', "_"));
    let files = TEMPLATES.iter().copied().chain([
        ("Cargo.toml", STANDALONE),
        ("README.md", STANDALONE_README),
        (".gitignore", "/target\n/dist\n"),
    ]);
    let values = [
        ("{{name}}", name),
        ("{{build}}", build.as_str()),
        ("{{test}}", test.as_str()),
        ("{{sdk}}", dependency.as_str()),
    ];
    write_crate(dir, files, &values)?;
    println!("created {} ({name}, SDK from {sdk})", dir.display());
    println!("next: cd {} && {build} && {test}", dir.display());
    Ok(())
}

fn write_crate<'a>(
    dir: &Path,
    files: impl Iterator<Item = (&'a str, &'a str)>,
    values: &[(&str, &str)],
) -> anyhow::Result<()> {
    for (file, template) in files {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().expect("template paths have a parent"))?;
        let text = values.iter().fold(template.to_string(), |text, (key, value)| text.replace(key, value));
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
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
