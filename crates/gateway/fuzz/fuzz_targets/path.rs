//! Any path through the normaliser: no panic; what it accepts starts with `/`, has no
//! empty, `.` or `..` segment, no escaped `/`, and normalises to itself (one pass is
//! enough, so no spelling survives that a second pass would change).
#![no_main]
use libfuzzer_sys::fuzz_target;

use gateway::path::normalize;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(p) = normalize(text) else { return };
    assert!(p.starts_with('/'), "{text:?} -> {p:?}");
    assert!(!p.contains("//"), "{text:?} -> {p:?}");
    let lower = p.to_ascii_lowercase();
    assert!(!lower.contains("%2f") && !lower.contains("%2e"), "{text:?} -> {p:?}");
    for seg in p.split('/').skip(1) {
        assert!(seg != "." && seg != "..", "{text:?} -> {p:?}");
    }
    assert_eq!(normalize(&p), Ok(p.clone()), "{text:?}");
});
