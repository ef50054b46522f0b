//! A DNS query as the node's DNS server receives it: parsed, and its first question looked up
//! in a table of one Service and its endpoints.
#![no_main]
use std::sync::OnceLock;

use hickory_proto::op::Message;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use skiff_agent::dns::DnsTable;

fn table() -> &'static DnsTable {
    static TABLE: OnceLock<DnsTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.43.0.7", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
        }))
        .expect("service");
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.42.0.5"], "hostname": "a", "conditions": {"ready": true}}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
        }))
        .expect("slice");
        DnsTable::build(&[service], &[slice], "cluster.local")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(message) = Message::from_vec(data) else {
        return;
    };
    if let Some(question) = message.queries.first() {
        let name = question.name.to_ascii();
        let _ = table().lookup(&name, question.query_type);
        let _ = table().negative_authority(&name);
    }
});
