//! Any text given to the configuration parser gives a configuration or an error naming a
//! line; it never panics (line and column arithmetic, the route locator, value parsers).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match gateway::config::parse("fuzz.toml", text) {
            Ok(cfg) => {
                let _ = cfg.acme_domains();
            }
            Err(e) => assert!(e.starts_with("fuzz.toml"), "an error that does not name the file: {e}"),
        }
    }
});
