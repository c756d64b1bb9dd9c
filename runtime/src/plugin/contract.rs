//! Which version of the `edge:plugin` contract a component implements, read from its
//! export names before anything runs, so an incompatible plugin gets a message, not a trap.

use serde::Serialize;
use wasmtime::Engine;
use wasmtime::component::Component;

/// The WIT package every plugin implements.
pub const CONTRACT_PACKAGE: &str = "edge:plugin";
/// The contract version this host was built from (`wit/plugin.wit`).
pub const CONTRACT_VERSION: &str = "1.0.0";
const TRANSLATOR: &str = "edge:plugin/translator@";

/// The names a component imports and exports.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentSummary {
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

impl ComponentSummary {
    pub fn of(component: &Component, engine: &Engine) -> Self {
        let ty = component.component_type();
        ComponentSummary {
            imports: ty.imports(engine).map(|(name, _)| name.to_string()).collect(),
            exports: ty.exports(engine).map(|(name, _)| name.to_string()).collect(),
        }
    }

    /// The contract version of the exported translator, if it is one this host accepts.
    pub fn contract_version(&self) -> Result<String, ContractProblem> {
        let Some(version) = self.exports.iter().find_map(|e| e.strip_prefix(TRANSLATOR)) else {
            let exports = if self.exports.is_empty() { "nothing".to_string() } else { self.exports.join(", ") };
            return Err(ContractProblem::NoTranslator(format!(
                "it exports no `{TRANSLATOR}{CONTRACT_VERSION}` interface (it exports {exports})"
            )));
        };
        if compatible(version, CONTRACT_VERSION) {
            Ok(version.to_string())
        } else {
            Err(ContractProblem::Incompatible { found: version.to_string(), accepted: accepted_range() })
        }
    }
}

#[derive(Debug)]
pub enum ContractProblem {
    NoTranslator(String),
    Incompatible { found: String, accepted: String },
}

/// Semver compatibility as cargo reads it: same major, or for 0.x the same minor.
/// A plugin built against a newer minor than the host's is refused too: it may call
/// host functions this host does not have.
fn compatible(found: &str, host: &str) -> bool {
    let parse = |v: &str| -> Option<(u64, u64, u64)> {
        let mut parts = v.split(['.', '-', '+']).map(|p| p.parse::<u64>().ok());
        Some((parts.next()??, parts.next()??, parts.next()??))
    };
    match (parse(found), parse(host)) {
        (Some((fmaj, fmin, _)), Some((hmaj, hmin, _))) if fmaj == hmaj && hmaj > 0 => fmin <= hmin,
        (Some((0, fmin, fpatch)), Some((0, hmin, hpatch))) => fmin == hmin && fpatch <= hpatch,
        _ => false,
    }
}

fn accepted_range() -> String {
    let (major, minor) = CONTRACT_VERSION.split_once('.').expect("CONTRACT_VERSION is semver");
    let minor = minor.split('.').next().unwrap_or("0");
    format!("{major}.0.0 to {major}.{minor}.x")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_major_older_minor_is_compatible() {
        assert!(compatible("1.0.0", "1.0.0"));
        assert!(compatible("1.0.3", "1.2.0"));
        assert!(!compatible("1.3.0", "1.2.0"));
        assert!(!compatible("2.0.0", "1.0.0"));
        assert!(!compatible("0.9.0", "1.0.0"));
        assert!(!compatible("garbage", "1.0.0"));
    }

    #[test]
    fn names_the_versions_in_the_refusal() {
        let summary = ComponentSummary { imports: vec![], exports: vec!["edge:plugin/translator@2.0.0".into()] };
        match summary.contract_version() {
            Err(ContractProblem::Incompatible { found, accepted }) => {
                assert_eq!(found, "2.0.0");
                assert_eq!(accepted, "1.0.0 to 1.0.x");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
