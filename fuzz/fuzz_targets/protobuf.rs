//! Kubernetes' protobuf envelope (`k8s\0` + Unknown) as kubectl sends it, decoded to JSON.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = skiff_api::protobuf::decode(data);
});
