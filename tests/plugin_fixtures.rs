//! Every shipped plugin passes its own fixtures through the real host (the same runner
//! as `edge plugin test <dir>`), and the fixtures cover the cases the issue names.

mod support;

use edge::plugin::{PluginEngine, SandboxLimits, fixtures};

fn run_fixtures(name: &str) {
    let engine = PluginEngine::new(SandboxLimits::default(), None).unwrap();
    let plugin = engine.load(&support::plugin(name), &[], None).unwrap();
    let cases = fixtures::discover(&support::repo().join("plugins").join(name).join("fixtures")).unwrap();
    assert!(cases.len() >= 3, "{name} ships too few fixtures");
    let failures: Vec<String> = fixtures::run(&plugin, &[], &cases, false)
        .into_iter()
        .filter(|r| !r.passed())
        .map(|r| format!("{}: {}", r.name, r.problems.join("; ")))
        .collect();
    assert!(failures.is_empty(), "{name} fixtures failed:\n{}", failures.join("\n"));
}

#[test]
fn ati_sherpa_fixtures() {
    run_fixtures("ati-sherpa");
}

#[test]
fn hitech_fixtures() {
    run_fixtures("hitech");
}

#[test]
fn simulator_fixtures() {
    run_fixtures("simulator");
}

#[test]
fn vda5050_fixtures() {
    run_fixtures("vda5050");
}

#[test]
fn every_shared_sample_has_a_fixture() {
    // The captured payloads in ../shared/samples are copied into fixtures byte for byte.
    let shared = support::repo().join("../shared/samples");
    if !shared.exists() {
        return; // a checkout without the shared folder: the fixtures themselves still run
    }
    let fixtures: Vec<Vec<u8>> = ["ati-sherpa", "hitech"]
        .iter()
        .flat_map(|p| std::fs::read_dir(support::repo().join("plugins").join(p).join("fixtures")).unwrap())
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    for sample in [
        "ati/sherpa-status-live-full.json",
        "ati/sherpa-status-live-short.json",
        "ati/sherpa-status-spec.json",
        "hitech/position-full.json",
        "hitech/position-minimal.json",
    ] {
        let bytes = std::fs::read(shared.join(sample)).unwrap();
        assert!(fixtures.contains(&bytes), "no fixture carries {sample}");
    }
}
