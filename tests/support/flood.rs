//! Running the built `flood_load` from a test: the fields of its summary
//! line, once it has succeeded with no errors.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

/// The `flood_load` binary of this build.
pub const FLOOD_LOAD: &str = env!("CARGO_BIN_EXE_flood_load");

/// Runs `flood_load` with `args` in `cwd`; the `key=value` fields of its
/// last summary line, after checking it exited 0 and counted no errors.
pub fn summary(args: &[&str], cwd: &Path) -> HashMap<String, String> {
    let out = Command::new(FLOOD_LOAD)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run flood_load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "flood_load {args:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = stdout
        .lines()
        .rfind(|l| l.starts_with("summary "))
        .unwrap_or_else(|| panic!("no summary line in {stdout}"));
    let fields: HashMap<String, String> = summary
        .split(' ')
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(fields["errors"], "0", "flood_load {args:?}:\n{stdout}");
    fields
}

/// Field `key` of a summary, as a number.
pub fn number<T: std::str::FromStr>(fields: &HashMap<String, String>, key: &str) -> T {
    fields[key]
        .parse()
        .unwrap_or_else(|_| panic!("{key}={}", fields[key]))
}
