//! Configuration errors fail at start with a message naming the setting.

use std::time::Duration;

use crate::support::{free_port, wait_output, Lake, LakeOptions};

fn stderr_of(lake: &Lake, args: &[&str], extra_env: &[(&str, &str)]) -> (bool, String) {
    let mut command = lake.command(args);
    for (key, value) in extra_env {
        command.env(key, value);
    }
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn marketlake");
    let output = wait_output(child, Duration::from_secs(60)).expect("marketlake exits");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A lake whose configuration file ends with `extra_toml`.
fn lake_with(extra_toml: &str) -> Lake {
    Lake::new(LakeOptions {
        extra_toml: extra_toml.into(),
        ..LakeOptions::default()
    })
    .expect("a test lake")
}

/// What `marketlake config show` prints for `lake`.
fn config_shown(lake: &Lake) -> String {
    let output = lake
        .run(&["config", "show"], Duration::from_secs(60))
        .expect("marketlake config show");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn unknown_key_is_named() {
    let lake = lake_with("bogus_setting = 1\n");
    let (ok, stderr) = stderr_of(&lake, &["config", "check"], &[]);
    assert!(!ok);
    assert!(stderr.contains("bogus_setting"), "{stderr}");
}

#[test]
fn unknown_source_setting_is_named_with_its_source() {
    let lake = Lake::new(LakeOptions {
        sources_toml: r#"[[sources]]
id = "ticks"
kind = "trades-csv"
settings = { file = "data/marketdata/csv/20131007_ibm_Trade_Tick.csv", delimitr = ";" }
"#
        .into(),
        ..LakeOptions::default()
    })
    .unwrap();
    let (ok, stderr) = stderr_of(&lake, &["config", "check"], &[]);
    assert!(!ok);
    assert!(stderr.contains("sources[0].settings"), "{stderr}");
    assert!(stderr.contains("delimitr"), "{stderr}");
}

#[test]
fn unreachable_broker_is_named() {
    let lake = Lake::new(LakeOptions::default()).unwrap();
    let dead = format!("127.0.0.1:{}", free_port());
    let (ok, stderr) = stderr_of(
        &lake,
        &["ingest", "--until-caught-up"],
        &[("MARKETLAKE__KAFKA__BROKERS", &dead)],
    );
    assert!(!ok);
    assert!(stderr.contains("kafka.brokers"), "{stderr}");
}

#[test]
fn unwritable_lake_root_is_named() {
    let lake = Lake::new(LakeOptions::default()).unwrap();
    let (ok, stderr) = stderr_of(
        &lake,
        &["ingest", "--until-caught-up"],
        &[(
            "MARKETLAKE__LAKE__ROOT",
            "/proc/marketlake-cannot-write-here",
        )],
    );
    assert!(!ok);
    assert!(stderr.contains("lake.root"), "{stderr}");
}

#[test]
fn config_show_masks_secrets() {
    let lake = lake_with("[kafka.client]\n\"sasl.password\" = \"hunter2\"\n");
    let stdout = config_shown(&lake);
    assert!(!stdout.contains("hunter2"), "{stdout}");
    assert!(stdout.contains("***"), "{stdout}");
}

#[test]
fn mixed_token_algorithm_families_are_refused() {
    let lake = lake_with("[api.auth]\nalgorithms = [\"HS256\", \"RS256\"]\n");
    let (ok, stderr) = stderr_of(&lake, &["config", "check"], &[]);
    assert!(!ok);
    assert!(stderr.contains("api.auth.algorithms"), "{stderr}");
    assert!(stderr.contains("one family"), "{stderr}");
}

#[test]
fn a_short_metrics_token_is_refused_and_a_set_one_is_never_shown() {
    let lake = lake_with("[api]\nmetrics_token = \"short\"\n");
    let (ok, stderr) = stderr_of(&lake, &["config", "check"], &[]);
    assert!(!ok);
    assert!(stderr.contains("api.metrics_token"), "{stderr}");
    let lake = lake_with("[api]\nmetrics_token = \"scrape-0123456789abcdef\"\n");
    let stdout = config_shown(&lake);
    assert!(!stdout.contains("scrape-0123456789abcdef"), "{stdout}");
}
