//! Replays every saved fuzz input (`fuzz/corpus/<target>/` and the inputs that once failed,
//! `fuzz/regressions/<target>/`) through the target's function, so `cargo test` checks them
//! all without cargo-fuzz (docs/fuzzing.md).

use std::path::Path;

/// A fuzz target's name and the function it runs on one input.
type Target = (&'static str, fn(&[u8]));

const TARGETS: [Target; 6] = [
    ("route", eddy_parse::fuzzing::route),
    ("manifest", eddy_parse::fuzzing::manifest),
    ("price_sheet", eddy_parse::fuzzing::price_sheet),
    ("units", eddy_parse::fuzzing::units),
    ("platform", eddy_parse::fuzzing::platform),
    ("api_bodies", eddy_parse::fuzzing::api_bodies),
];

#[test]
fn every_saved_input_replays() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    for (target, run) in TARGETS {
        let mut replayed = 0;
        for dir in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                let input = std::fs::read(&path).unwrap();
                if std::panic::catch_unwind(|| run(&input)).is_err() {
                    panic!("{} fails", path.display());
                }
                replayed += 1;
            }
        }
        assert!(replayed > 0, "no saved inputs for fuzz target {target}");
    }
}
