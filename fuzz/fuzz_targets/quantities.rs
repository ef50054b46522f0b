//! Resource quantities (`500m`, `1.5Gi`, `1e3`): parsed as CPU and as bytes; what parses is
//! formatted back.
#![no_main]
use libfuzzer_sys::fuzz_target;
use skiff_api::quantity;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(millis) = quantity::cpu_millis(text) {
        let _ = quantity::format_cpu(millis);
    }
    if let Ok(bytes) = quantity::bytes(text) {
        let _ = quantity::format_bytes(bytes);
    }
});
