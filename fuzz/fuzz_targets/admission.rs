//! A create body from the wire (JSON or YAML) through decoding and admission (type meta,
//! typed decoding, unknown fields, defaults, validation) for pods, deployments, services and
//! configmaps. The first byte picks the content type and the resource.
#![no_main]
use libfuzzer_sys::fuzz_target;
use skiff_api::admission::{admit, FieldValidation};
use skiff_api::decode::decode_object;
use skiff_api::resources::find;

const RESOURCES: [(&str, &str, &str); 4] = [
    ("", "v1", "pods"),
    ("apps", "v1", "deployments"),
    ("", "v1", "services"),
    ("", "v1", "configmaps"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let content_type = if which & 1 == 0 {
        "application/json"
    } else {
        "application/yaml"
    };
    let (group, version, resource) = RESOURCES[(which as usize >> 1) % RESOURCES.len()];
    let Some(info) = find(group, version, resource) else {
        return;
    };
    if let Ok(object) = decode_object(body, Some(content_type)) {
        let _ = admit(info, object, FieldValidation::Strict);
    }
});
