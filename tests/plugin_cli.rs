//! `edge plugin test | inspect | new` through the real binary: exit codes, output formats,
//! diffs on failure, and a scaffolded plugin that builds and passes its fixtures unchanged.

mod support;

use std::process::Output;

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn fixture_folder_passes_with_a_line_per_case() {
    let cache = tempfile::tempdir().unwrap();
    let out = support::edge(cache.path())
        .args(["plugin", "test", "plugins/dist/hitech.wasm", "plugins/hitech/fixtures"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    assert!(stdout.contains("PASS plugins/hitech/fixtures/flat-xy"), "{stdout}");
    let cases = std::fs::read_dir(support::repo().join("plugins/hitech/fixtures"))
        .unwrap()
        .filter(|f| f.as_ref().unwrap().file_name().to_string_lossy().ends_with(".expected.json"))
        .count();
    assert!(stdout.contains(&format!("plugins/hitech/fixtures: {cases} passed, 0 failed")), "{stdout}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("PASS ")).count(), cases, "{stdout}");
}

#[test]
fn failing_case_prints_the_difference_and_exits_1() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = support::repo().join("plugins/hitech/fixtures");
    for file in ["full.payload.json", "full.expected.json", "bare-minimum.payload.json", "bare-minimum.expected.json"] {
        std::fs::copy(src.join(file), dir.path().join(file)).unwrap();
    }
    let expected = dir.path().join("full.expected.json");
    let edited = std::fs::read_to_string(&expected).unwrap().replace("\"x\": 150.0", "\"x\": 151.0");
    std::fs::write(&expected, edited).unwrap();
    let out = support::edge(cache.path())
        .args(["plugin", "test", "plugins/dist/hitech.wasm"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stdout.contains("FAIL") && stdout.contains("positions[0].x: expected 151, got 150"), "{stdout}");
    assert!(stdout.contains("PASS") && stdout.contains("1 passed, 1 failed"), "{stdout}");
}

#[test]
fn payload_file_prints_positions_as_json() {
    let cache = tempfile::tempdir().unwrap();
    let out = support::edge(cache.path())
        .args(["plugin", "test", "plugins/dist/ati-sherpa.wasm", "plugins/ati-sherpa/fixtures/live-full.payload.json"])
        .args(["--topic", "ati_fm/sherpa/status", "--config", "timestamp_offset=+05:30"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = &json["positions"][0];
    assert_eq!(p["device_id"], "tug-55-tvsmotor-hosur-09");
    assert_eq!(p["timestamp_ms"], 1_764_575_512_000u64);
    assert_eq!(p["battery_percent"], 95.0);
    assert_eq!(json["topic"], "ati_fm/sherpa/status");
    assert!(!text(&out).contains("matches none"), "a topic the plugin subscribes to: no note");
}

#[test]
fn a_topic_the_plugin_never_gets_is_pointed_out() {
    let cache = tempfile::tempdir().unwrap();
    let out = support::edge(cache.path())
        .args(["plugin", "test", "plugins/dist/ati-sherpa.wasm", "plugins/ati-sherpa/fixtures/live-full.payload.json"])
        .args(["--topic", "robotspace/amr/7/pose"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`robotspace/amr/7/pose` matches none of the plugin's default topics (ati/amr/+/status"),
        "{stderr}"
    );
}

#[test]
fn malformed_payload_prints_the_error_and_exits_1() {
    let cache = tempfile::tempdir().unwrap();
    let out = support::edge(cache.path())
        .args(["plugin", "test", "plugins/dist/hitech.wasm", "plugins/hitech/fixtures/flat-xy.payload.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["error"]["kind"], "malformed");
    assert!(json["error"]["message"].as_str().unwrap().contains("position: missing"));
}

#[test]
fn broken_plugin_file_is_a_clear_error_with_exit_2() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.wasm");
    std::fs::write(&broken, b"not wasm").unwrap();
    let out = support::edge(cache.path()).args(["plugin", "test"]).arg(&broken).arg("README.md").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("broken.wasm is not a WebAssembly component"), "{}", text(&out));
}

#[test]
fn inspect_reports_contract_topics_and_imports() {
    let cache = tempfile::tempdir().unwrap();
    let out = support::edge(cache.path())
        .args(["plugin", "inspect", "--json", "plugins/dist/vda5050.wasm"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["contract"], "edge:plugin@1.0.0");
    assert_eq!(json["plugin"]["name"], "vda5050");
    assert_eq!(json["plugin"]["default_topics"][0], "+/+/+/+/state");
    assert!(json["imports"].as_array().unwrap().iter().any(|i| i.as_str().unwrap().starts_with("wasi:")));
    assert_eq!(json["sha256"].as_str().unwrap().len(), 64);
    // The second inspect comes from the on-disk cache.
    let again = support::edge(cache.path())
        .args(["plugin", "inspect", "--json", "plugins/dist/vda5050.wasm"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(json["compile"]["source"], "hit");
}

#[test]
fn new_plugin_builds_and_passes_its_fixtures_unchanged() {
    let cache = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let workspace = work.path().join("plugins");
    copy_tree(&support::repo().join("plugins"), &workspace);
    copy_tree(&support::repo().join("wit"), &work.path().join("wit"));

    let out = support::edge(cache.path())
        .args(["plugin", "new", "acme-agv", "--workspace"])
        .arg(&workspace)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // Reuse the repository's plugin target directory: the wasm std is built once.
    let build = std::process::Command::new(support::repo().join("scripts/build-plugins"))
        .arg(&workspace)
        .env("CARGO_TARGET_DIR", support::repo().join("plugins/target"))
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", text(&build));
    let test = support::edge(cache.path())
        .args(["plugin", "test"])
        .arg(workspace.join("dist/acme-agv.wasm"))
        .arg(workspace.join("acme-agv/fixtures"))
        .output()
        .unwrap();
    assert!(test.status.success(), "{}", text(&test));
    assert!(String::from_utf8_lossy(&test.stdout).contains("2 passed, 0 failed"), "{}", text(&test));

    let again = support::edge(cache.path())
        .args(["plugin", "new", "acme-agv", "--workspace"])
        .arg(&workspace)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2), "creating it twice must fail");
    assert!(text(&again).contains("already exists"));
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "target" || name == "dist" {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to.join(&name));
        } else {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

#[test]
fn a_plugin_that_sleeps_is_cut_off_with_a_clear_error() {
    let (cache, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let payload = dir.path().join("sleep.payload.json");
    std::fs::write(&payload, "sleep:60000").unwrap();
    let started = std::time::Instant::now();
    let out = support::edge(cache.path())
        .args(["plugin", "test", "plugins/dist/hostile.wasm"])
        .arg(&payload)
        .output()
        .unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "took {:?}", started.elapsed());
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("did not return within its deadline"), "{}", text(&out));

    let started = std::time::Instant::now();
    let out = support::edge(cache.path()).args(["plugin", "inspect", "plugins/dist/sleepy.wasm"]).output().unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "took {:?}", started.elapsed());
    assert!(!out.status.success() && text(&out).contains("describe() did not return"), "{}", text(&out));
}

#[test]
fn version_names_the_plugin_contract() {
    let cache = tempfile::tempdir().unwrap();
    let out = support::edge(cache.path()).arg("--version").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("plugin contract edge:plugin@1.0.0, accepts 1.x"), "{stdout}");
}

#[test]
fn completions_and_man_page_come_from_the_same_commands() {
    let cache = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let out = support::edge(cache.path()).args(["completions", shell]).output().unwrap();
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && script.contains("calibrate") && script.contains("status"), "{shell}: {script}");
    }
    let out = support::edge(cache.path()).arg("man").output().unwrap();
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && page.contains(".TH edge 1") && page.contains("calibrate"), "{page}");
}

#[test]
fn a_standalone_plugin_crate_builds_outside_the_repository_and_passes_its_fixtures() {
    let cache = tempfile::tempdir().unwrap();
    let vendor = tempfile::tempdir().unwrap();
    let dir = vendor.path().join("robotspace-plugin");
    let repo = support::repo();
    let out = support::edge(cache.path())
        .args(["plugin", "new", "robotspace", "--standalone"])
        .arg(&dir)
        .arg("--sdk")
        .arg(repo.join("plugins/sdk"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !std::fs::read_to_string(repo.join("plugins/Cargo.toml")).unwrap().contains("robotspace"),
        "the repository is untouched"
    );
    // Built as a vendor would; a target folder kept between runs saves compiling the SDK again
    // (not the plugins workspace's, whose components all land in plugins/dist).
    let build = std::process::Command::new(repo.join("scripts/build-plugins"))
        .arg(&dir)
        .env("CARGO_TARGET_DIR", repo.join("target/standalone-plugin"))
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", text(&build));
    let test = support::edge(cache.path())
        .args(["plugin", "test"])
        .arg(dir.join("dist/robotspace.wasm"))
        .arg(dir.join("fixtures"))
        .output()
        .unwrap();
    assert!(
        test.status.success() && String::from_utf8_lossy(&test.stdout).contains("2 passed, 0 failed"),
        "{}",
        text(&test)
    );
}

#[test]
fn plugin_list_shows_every_component_in_a_folder_and_the_unusable_ones() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for name in ["ati-sherpa", "hitech"] {
        std::fs::copy(support::plugin(name), dir.path().join(format!("{name}.wasm"))).unwrap();
    }
    std::fs::write(dir.path().join("half-copied.wasm"), b"\0asm").unwrap();
    let out = support::edge(cache.path()).args(["plugin", "list"]).arg(dir.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("ati-sherpa 1.0.0 (ATI Motors), contract 1.0.0"), "{stdout}");
    assert!(stdout.contains("hitech 1.1.0") && stdout.contains("hitech/amr/+/event"), "{stdout}");
    assert!(stdout.contains("half-copied.wasm: NOT USABLE"), "{stdout}");
    assert!(stdout.contains("3 components, 1 not usable"), "{stdout}");
}
