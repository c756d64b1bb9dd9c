//! The configuration tools. `edge check`: every problem of a bad edge.yaml with its key path,
//! exit 1, and never a secret in the output; a good file is summarised, its secrets still
//! hidden. The local commands (`edge spool`) take the config as `edge run` does, without
//! needing the secrets. `edge calibrate` fits a transform and prints the snippet to paste.

mod support;

use std::process::Output;

const PASSWORD: &str = "literal-Passw0rd-in-yaml";
const API_KEY: &str = "literal-api-key-in-yaml";

fn check(yaml: &str, env: &[(&str, &str)]) -> (Output, String) {
    check_with_mode(yaml, env, 0o600)
}

fn check_with_mode(yaml: &str, env: &[(&str, &str)], mode: u32) -> (Output, String) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.yaml");
    std::fs::write(&path, yaml).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut cmd = support::edge(cache.path());
    cmd.arg("check").arg(&path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out, text)
}

#[test]
fn every_problem_is_listed_with_its_key_path() {
    let yaml = format!(
        r#"
colour: blue
sources:
  - name: ati
    mqtt: {{ host: broker, port: 8883, qos: 1, topics: ["ati_fm/#/status"], bogus: 1 }}
    plugin: {{ path: ati.wasm }}
    plant: older
    transform: {{ affine: [1, 0, 0, 1, 0, 0] }}
  - name: hitech
    mqtt: {{ host: broker, password: "{PASSWORD}" }}
    plugin: {{ path: hitech.wasm, sha256: abc }}
    plant: nowhere
    transform: {{ affine: [1000, 2000, 1, 2, 0, 0] }}
plants:
  - name: older
    twinzo: {{ client: TVSMotor, api_key: "{API_KEY}", branch: not-a-guid }}
    devices:
      tug-133: {{ login: tugger-01, password: "{PASSWORD}", sector: "8010257b-d416-43e2-b1a3-cc98604bb117" }}
      tug-55: {{ login: tugger-01, password: "{PASSWORD}", sector: 1 }}
      tug-56: {{ login: tugger-01, password: "{PASSWORD}", sector: 1 }}
      tug-78: {{ login: tugger-04, sector: 2 }}
      tug-39: {{ login: tugger-02, password: "${{MISSING_PASSWORD_VAR}}", sector: 3 }}
"#
    );
    let (out, text) = check(&yaml, &[]);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for expected in [
        "colour",
        "sources[0].mqtt.bogus",
        "sources[1].plant: no plant is named `nowhere`",
        "sources[1].plugin.sha256: expected 64 hex digits",
        "sources[1].mqtt.password: a password needs a username",
        "sources[1].transform.affine: [a, b, c, d] = [1000, 2000, 1, 2] is singular",
        "plants[0].twinzo.branch: `not-a-guid` is not a branch GUID",
        r#"plants[0].devices["tug-133"].sector: expected Twinzo's integer sector id"#,
        r#"plants[0].devices["tug-78"].password: missing"#,
        "login `tugger-01` is already used by device",
        r#"plants[0].devices["tug-39"].password: environment variable MISSING_PASSWORD_VAR is not set"#,
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(!text.contains(PASSWORD) && !text.contains(API_KEY), "a secret was printed:\n{text}");
}

#[test]
fn a_topic_filter_with_a_misplaced_wildcard_is_named() {
    let yaml = r#"
sources:
  - name: s
    mqtt: { topics: ["a/#/b"] }
    plugin: { path: x.wasm }
    plant: p
    transform: { affine: [1000, 0, 0, 1000, 0, 0] }
plants:
  - { name: p, dry_run: true }
"#;
    let (out, text) = check(yaml, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text.contains("sources[0].mqtt.topics[0]: `a/#/b`: `#` must be a whole level and the last one"), "{text}");
}

#[test]
fn a_good_file_is_summarised_without_secrets() {
    let yaml = format!(
        r#"
sources:
  - name: ati
    mqtt: {{ host: fm.example, protocol: "5", username: tug-bridge, password: "${{ATI_PASSWORD}}", tls: {{ insecure: true }} }}
    plugin: {{ path: ati.wasm, options: {{ timestamp_offset: "+05:30" }} }}
    plant: older
    transform: {{ affine: [999.738230, 22.879501, 22.879501, -999.738230, 95598.77, 167357.60] }}
plants:
  - name: older
    twinzo: {{ client: TVSMotor, api_key: "{API_KEY}", branch: dcac4881-05ab-4f29-b0df-79c40df9c9c2 }}
    devices:
      tug-133: {{ login: tugger-01, password: "{PASSWORD}", sector: 1 }}
"#
    );
    let (out, text) = check(&yaml, &[("ATI_PASSWORD", "env-secret-value")]);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("OK")
            && text.contains("source ati: fm.example:8883 (MQTT V5, TLS)")
            && text.contains("1 devices"),
        "{text}"
    );
    assert!(text.contains("warning: sources[0].mqtt.tls.insecure"), "{text}");
    assert!(text.contains("does not exist yet"), "a missing plugin file is a warning: {text}");
    for secret in [PASSWORD, API_KEY, "env-secret-value"] {
        assert!(!text.contains(secret), "a secret was printed:\n{text}");
    }
}

#[test]
fn the_repository_configs_are_valid() {
    for file in ["edge.yaml", "examples/ati-plant.yaml", "examples/hitech-plant.yaml", "examples/two-plants.yaml"] {
        let cache = tempfile::tempdir().unwrap();
        let out = support::edge(cache.path())
            .args(["check", file])
            .envs(
                ["ATI_MQTT_PASSWORD", "HIVEMQ_PASSWORD", "TWINZO_API_KEY", "HITECH_AMR_01_PASSWORD"].map(|k| (k, "x")),
            )
            .envs((1..=4).map(|i| (format!("TUGGER_0{i}_PASSWORD"), "x")))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{file}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        if file == "edge.yaml" {
            // The topics a source will subscribe to, read from its plugin when the config names none.
            assert!(stdout.contains("[edge-sim/+/+/state (the plugin's defaults)]"), "{stdout}");
        }
    }
}

#[test]
fn a_source_may_name_its_plugin_in_the_plugins_dir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    std::fs::copy(support::plugin("hitech"), dir.path().join("plugins/hitech-amr.wasm")).unwrap();
    let source = |name: &str, plugin: &str| {
        format!(
            "  - {{ name: {name}, mqtt: {{}}, plugin: {plugin}, plant: p, transform: {{ affine: [1000, 0, 0, 1000, 0, 0] }} }}\n"
        )
    };
    let plants = "plants:\n  - { name: p, dry_run: true, devices: { r1: { sector: 1 } } }\n";
    let good = format!(
        "plugins_dir: plugins\nsources:\n{}{}{plants}",
        source("hitech", "{ name: hitech }"),
        source("acme", "{ name: acme-agv }")
    );
    let config = dir.path().join("edge.yaml");
    support::write_private(&config, &good);
    let cache = tempfile::tempdir().unwrap();
    let out = support::edge(cache.path()).arg("check").arg(&config).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("plugins_dir") && text.contains("1 plugins, 0 files not usable"), "{text}");
    assert!(text.contains("via plugin `hitech` of plugins_dir") && text.contains("hitech/amr/+/position"), "{text}");
    assert!(
        text.contains("source acme: no plugin named `acme-agv`") && text.contains("it holds hitech 1.1.0"),
        "a name the folder does not hold (yet) is a warning: {text}"
    );
    let listed = support::edge(cache.path()).args(["plugin", "list", "-c"]).arg(&config).output().unwrap();
    let listed_text = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success() && listed_text.contains("hitech-amr.wasm: hitech 1.1.0"), "{listed_text}");

    let bad = format!(
        "sources:\n{}{}{plants}",
        source("named", "{ name: hitech }"),
        source("both", "{ name: hitech, path: x.wasm }")
    );
    support::write_private(&config, &bad);
    let out = support::edge(cache.path()).arg("check").arg(&config).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("sources[0].plugin.name: names a plugin, but there is no `plugins_dir`"), "{text}");
    assert!(text.contains("sources[1].plugin: give either `path`"), "{text}");
}

#[test]
fn a_readable_file_with_secrets_in_clear_is_refused() {
    let yaml = format!(
        r#"
plants:
  - name: p
    twinzo: {{ client: T, api_key: "{API_KEY}", branch: dcac4881-05ab-4f29-b0df-79c40df9c9c2 }}
    devices:
      r: {{ password: "${{R_PASSWORD}}", sector: 1 }}
"#
    );
    let (out, text) = check_with_mode(&yaml, &[("R_PASSWORD", "from-env")], 0o644);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("every user may read this file, and it holds secrets in clear (plants[0].twinzo.api_key)"),
        "{text}"
    );
    assert!(!text.contains(API_KEY) && !text.contains("from-env"));
    // The same file, private, is fine; and secrets from the environment need no such care.
    assert_eq!(check_with_mode(&yaml, &[("R_PASSWORD", "x")], 0o600).0.status.code(), Some(0));
    let from_env = yaml.replace(API_KEY, "${KEY}");
    assert_eq!(check_with_mode(&from_env, &[("R_PASSWORD", "x"), ("KEY", "k")], 0o644).0.status.code(), Some(0));
    let (out, text) = check_with_mode(&from_env, &[("R_PASSWORD", "x"), ("KEY", "k")], 0o666);
    assert_eq!(out.status.code(), Some(1));
    assert!(text.contains("every user may write this file"), "{text}");
}

#[test]
fn settings_that_make_restarts_lossy_are_warned_about() {
    let source = |name: &str, mqtt: &str| {
        format!(
            "  - name: {name}\n    mqtt: {mqtt}\n    plugin: {{ path: x.wasm }}\n    plant: p\n    transform: {{ affine: [1, 0, 0, 1, 0, 0] }}\n"
        )
    };
    let yaml = format!(
        "sources:\n{}{}{}{}plants:\n  - name: p\n    dry_run: true\n    devices: {{ r: {{ sector: 1 }} }}\n",
        source("defaults", "{ host: b }"),
        source("clean", "{ host: b, clean_start: true }"),
        source("no-expiry", "{ host: b, protocol: \"5\", session_expiry_s: 0 }"),
        source("short", "{ host: b, protocol: \"5\", session_expiry_s: 60 }"),
    );
    let (out, text) = check(&yaml, &[]);
    assert_eq!(out.status.code(), Some(0), "warnings, not errors: {text}");
    for (i, setting) in [(1, "clean_start: true"), (2, "session_expiry_s: 0"), (3, "session_expiry_s: 60")] {
        assert!(text.contains(&format!("warning: sources[{i}].mqtt: {setting}")), "sources[{i}]: {text}");
    }
    assert!(!text.contains("warning: sources[0].mqtt:"), "the defaults keep a session: {text}");
}

#[test]
fn a_yaml_syntax_error_names_its_place_not_its_text() {
    let yaml =
        format!("plants:\n  - name: p\n    twinzo: {{ api_key: \"{API_KEY}, client: t }}\n  password: '{PASSWORD}\n");
    let (out, text) = check(&yaml, &[]);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("not valid YAML: ") && text.contains("line 3"), "{text}");
    for secret in [PASSWORD, API_KEY, &API_KEY[..12]] {
        assert!(!text.contains(secret), "a secret was printed:\n{text}");
    }
}

#[test]
fn alert_rules_and_webhooks_are_checked_without_quoting_the_url() {
    let yaml = r#"
health: { stale_after_s: -1 }
alerts:
  rules:
    device_stale: { threshold: 3 }
    battery_low: { threshold: 20, severity: critical }
    device_gone: { for_s: 5 }
  webhooks:
    - { url: "hooks.slack.example/T0/B0/XXsecretXX", format: slack }
"#;
    let (out, text) = check(yaml, &[]);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("health.stale_after_s"), "{text}");
    assert!(text.contains("device_gone"), "an unknown kind is named: {text}");
    assert!(!text.contains("XXsecretXX"), "the webhook URL carries its token:\n{text}");
    let (out, text) = check(
        r#"
alerts:
  rules: { device_stale: { threshold: 3 } }
  webhooks: [{ url: "ftp://example/XXsecretXX" }]
"#,
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("alerts.rules.device_stale.threshold: this kind takes no threshold"), "{text}");
    assert!(text.contains("alerts.webhooks[0].url: must start with http"), "{text}");
    assert!(!text.contains("XXsecretXX"), "{text}");
}

#[test]
fn spool_commands_take_the_config_either_way_and_need_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.yaml");
    let yaml = r#"
plants:
  - name: older
    twinzo: { client: TVSMotor, api_key: "${UNSET_TWINZO_KEY}", branch: dcac4881-05ab-4f29-b0df-79c40df9c9c2 }
    devices:
      tug-133: { login: tugger-01, password: "${UNSET_TUG_PASSWORD}", sector: 1 }
"#;
    support::write_private(&path, yaml);
    let cache = tempfile::tempdir().unwrap();
    for form in [&["spool", "status"][..], &["spool", "status", "-c"], &["spool", "-c"]] {
        let mut cmd = support::edge(cache.path());
        cmd.args(form).arg(&path).env_remove("UNSET_TWINZO_KEY").env_remove("UNSET_TUG_PASSWORD");
        if form.len() == 2 && form[1] == "-c" {
            cmd.arg("status");
        }
        let out = cmd.output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "edge {form:?} failed:\n{text}");
        assert!(text.contains("older"), "{text}");
    }
    // Two different files named: refused, clearly.
    let out = support::edge(cache.path()).args(["spool", "status", "other.yaml", "-c"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("two configuration files"));
    // `edge run` still needs them.
    let out = support::edge(cache.path()).arg("check").arg(&path).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("UNSET_TUG_PASSWORD is not set"));
}

/// Reference points of the older plant's transform, with map-reading noise and one misread point.
const SURVEY: &str = "name,vendor_x,vendor_y,twinzo_x,twinzo_y
# name, vendor metres, Twinzo millimetres
dock-1, 10, 5, 108210.55, 160787.70
dock-2, 120, 8, 212750.39, 163305.23
gate, 115, 90, 214127.82, 82812.30
rack-a, 12, 85, 107340.39, 80054.40
rack-b, 60, 45, 159712.64, 124142.15
charger, 30, 60, 126063.69, 111359.69
wash, 95, 20, 193031.49, 146636.39
lift, 80, 70, 174379.39, 98906.28
misread, 40, 20, 147045.89, 151278.02
";

#[test]
fn calibrate_fits_the_snippet_to_paste_and_checks_a_config() {
    let dir = tempfile::tempdir().unwrap();
    let pairs = dir.path().join("pairs.csv");
    std::fs::write(&pairs, SURVEY).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let calibrate = |args: &[&str]| {
        let out = support::edge(cache.path()).arg("calibrate").arg(&pairs).args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };
    let (code, text) = calibrate(&[]);
    assert_eq!(code, Some(0), "{text}");
    for expected in [
        "9 points",
        "similarity: scale",
        "vendor Y mirrored",
        "outliers: misread",
        "recommended: similarity",
        "transform:",
    ] {
        assert!(text.contains(expected), "{expected:?} missing:\n{text}");
    }
    // The snippet without the misread point is valid edge.yaml and close to the plant's transform.
    let (code, yaml) = calibrate(&["--drop", "misread", "--yaml"]);
    assert_eq!(code, Some(0), "{yaml}");
    let snippet: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
    let affine: Vec<f64> =
        snippet["transform"]["affine"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let older = [999.738230, 22.879501, 22.879501, -999.738230, 95598.77, 167357.60];
    // Within the map-reading noise (about 3 m) of the plant's transform, over the surveyed area.
    let apply = |t: &[f64], x: f64, y: f64| (t[0] * x + t[1] * y + t[4], t[2] * x + t[3] * y + t[5]);
    for (x, y) in [(10.0, 5.0), (120.0, 8.0), (115.0, 90.0), (12.0, 85.0), (60.0, 45.0)] {
        let ((fx, fy), (ox, oy)) = (apply(&affine, x, y), apply(&older, x, y));
        assert!((fx - ox).hypot(fy - oy) < 3000.0, "at ({x}, {y}): {affine:?} vs {older:?}");
    }
    let (_, json) = calibrate(&["--json"]);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["outliers"][0][0], "misread");

    // --check judges a config's transform against the same points.
    let config = dir.path().join("edge.yaml");
    support::write_private(
        &config,
        format!(
            "sources:\n  - name: ati\n    mqtt: {{ host: fm.example }}\n    plugin: {{ path: ati.wasm }}\n    plant: p\n    transform: {{ affine: {older:?} }}\nplants:\n  - {{ name: p, dry_run: true }}\n"
        ),
    );
    let (code, text) = calibrate(&["--drop", "misread", "--check", config.to_str().unwrap(), "--source", "ati"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("configured: scale 1000.000") && text.contains("best fit:"), "{text}");

    // What cannot be fitted is refused with the reason.
    std::fs::write(&pairs, "a, 1, 1, 1000, 1000\nb, 1, 1, 2000, 2000\n").unwrap();
    let (code, text) = calibrate(&[]);
    assert_eq!(code, Some(2));
    assert!(text.contains("points a and b are at the same vendor position"), "{text}");
    std::fs::write(&pairs, "a, 1, 1, 1000, 1000\n").unwrap();
    assert!(calibrate(&[]).1.contains("a similarity fit needs at least 2 points, 1 given"));
}
