//! Any text as `mend.toml`: an error or a validated configuration, never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(config) = mend_config::FileConfig::parse(std::path::Path::new("mend.toml"), text) {
        for dataset in &config.datasets {
            assert!(!dataset.name.is_empty() && !dataset.topic.is_empty() && !dataset.table.is_empty());
        }
    }
});
