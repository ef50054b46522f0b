//! Services, Endpoints and EndpointSlices: ports, types and addresses.

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::pod::PROTOCOLS;
use super::{labels, one_of, port_number};
use crate::names;
use crate::status::{go_quote, Cause};

/// Sorted, as Kubernetes lists them.
const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const SESSION_AFFINITIES: &[&str] = &["ClientIP", "None"];
const TRAFFIC_POLICIES: &[&str] = &["Cluster", "Local"];
/// Kubernetes' default `--service-node-port-range`.
const NODE_PORTS: std::ops::RangeInclusive<i32> = 30000..=32767;
const IP_DETAIL: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";
/// What an EndpointSlice's addresses may be, sorted as Kubernetes lists them.
const ADDRESS_TYPES: &[&str] = &["FQDN", "IPv4", "IPv6"];

pub(in crate::admission) fn service(svc: &Service) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = svc.spec.clone().unwrap_or_default();
    let service_type = spec.type_.as_deref().unwrap_or("");
    causes.extend(one_of(spec.type_.as_deref(), "spec.type", SERVICE_TYPES));

    let cluster_ip = spec.cluster_ip.as_deref().unwrap_or("");
    let headless = cluster_ip == "None";
    if !headless && !cluster_ip.is_empty() && cluster_ip.parse::<IpAddr>().is_err() {
        causes.push(Cause::invalid(
            "spec.clusterIP",
            &go_quote(cluster_ip),
            IP_DETAIL,
        ));
    }

    let ports = spec.ports.as_deref().unwrap_or_default();
    if ports.is_empty() && !headless && service_type != "ExternalName" {
        causes.push(Cause::required("spec.ports"));
    }
    if service_type == "ExternalName" {
        match spec.external_name.as_deref().unwrap_or("") {
            "" => causes.push(Cause::required("spec.externalName")),
            name => {
                let trimmed = name.strip_suffix('.').unwrap_or(name);
                for msg in names::dns1123_subdomain(trimmed) {
                    causes.push(Cause::invalid("spec.externalName", &go_quote(name), &msg));
                }
            }
        }
    }

    // With several ports each needs a name: Endpoints and SRV records tell them apart by it.
    let require_names = ports.len() > 1;
    let mut port_names = BTreeSet::new();
    let mut node_ports = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        match port.name.as_deref().unwrap_or("") {
            "" if require_names => causes.push(Cause::required(format!("{path}.name"))),
            "" => {}
            name => {
                causes.extend(port_name(name, &path));
                if !port_names.insert(name) {
                    causes.push(Cause::duplicate(format!("{path}.name"), name));
                }
            }
        }
        causes.extend(port_number(port.port, &format!("{path}.port")));
        causes.extend(one_of(
            port.protocol.as_deref(),
            &format!("{path}.protocol"),
            PROTOCOLS,
        ));
        match &port.target_port {
            Some(IntOrString::Int(n)) => {
                causes.extend(port_number(*n, &format!("{path}.targetPort")));
            }
            Some(IntOrString::String(name)) => {
                for msg in names::port_name(name) {
                    causes.push(Cause::invalid(
                        format!("{path}.targetPort"),
                        &go_quote(name),
                        &msg,
                    ));
                }
            }
            None => {}
        }
        if let Some(node_port) = port.node_port.filter(|p| *p != 0) {
            let node_port_path = format!("{path}.nodePort");
            if service_type == "ClusterIP" {
                causes.push(Cause::forbidden(
                    node_port_path,
                    "may not be used when `type` is 'ClusterIP'",
                ));
            } else if !NODE_PORTS.contains(&node_port) {
                causes.push(Cause::invalid(
                    node_port_path,
                    &node_port.to_string(),
                    "provided port is not in the valid range. The range of valid ports is 30000-32767",
                ));
            } else if !node_ports.insert((node_port, port.protocol.clone())) {
                causes.push(Cause {
                    reason: "FieldValueDuplicate".to_string(),
                    message: format!("Duplicate value: {node_port}"),
                    field: node_port_path,
                });
            }
        }
    }

    causes.extend(one_of(
        spec.session_affinity.as_deref(),
        "spec.sessionAffinity",
        SESSION_AFFINITIES,
    ));
    for (field, value) in [
        ("spec.externalTrafficPolicy", &spec.external_traffic_policy),
        ("spec.internalTrafficPolicy", &spec.internal_traffic_policy),
    ] {
        if value.is_some() {
            causes.extend(one_of(value.as_deref(), field, TRAFFIC_POLICIES));
        }
    }
    causes.extend(labels(spec.selector.as_ref(), "spec.selector"));
    causes
}

pub(in crate::admission) fn endpoints(endpoints: &Endpoints) -> Vec<Cause> {
    let mut causes = Vec::new();
    for (i, subset) in endpoints.subsets.iter().flatten().enumerate() {
        let subset_path = format!("subsets[{i}]");
        for (list, addresses) in [
            ("addresses", &subset.addresses),
            ("notReadyAddresses", &subset.not_ready_addresses),
        ] {
            for (j, address) in addresses.iter().flatten().enumerate() {
                let path = format!("{subset_path}.{list}[{j}].ip");
                match address.ip.parse::<IpAddr>() {
                    Err(_) => causes.push(Cause::invalid(path, &go_quote(&address.ip), IP_DETAIL)),
                    Ok(ip) => {
                        for msg in special_ip(ip, &address.ip) {
                            causes.push(Cause::invalid(path.clone(), &go_quote(&address.ip), &msg));
                        }
                    }
                }
            }
        }
        let ports = subset.ports.as_deref().unwrap_or_default();
        for (j, port) in ports.iter().enumerate() {
            let path = format!("{subset_path}.ports[{j}]");
            match port.name.as_deref().unwrap_or("") {
                "" if ports.len() > 1 => causes.push(Cause::required(format!("{path}.name"))),
                "" => {}
                name => causes.extend(port_name(name, &path)),
            }
            causes.extend(port_number(port.port, &format!("{path}.port")));
            causes.extend(one_of(
                port.protocol.as_deref(),
                &format!("{path}.protocol"),
                PROTOCOLS,
            ));
        }
    }
    causes
}

/// An EndpointSlice (`discovery/validation`, trimmed to what a hand-written slice gets
/// wrong): a known address type, at least one address per endpoint, each of that type, and
/// ports with DNS-label names that differ, a known protocol and a valid number.
pub(in crate::admission) fn endpoint_slice(slice: &EndpointSlice) -> Vec<Cause> {
    let address_type = slice.address_type.as_str();
    let mut causes: Vec<Cause> = one_of(Some(address_type), "addressType", ADDRESS_TYPES)
        .into_iter()
        .collect();
    for (i, endpoint) in slice.endpoints.iter().enumerate() {
        let path = format!("endpoints[{i}].addresses");
        if endpoint.addresses.is_empty() {
            causes.push(Cause::required_because(
                &path,
                "must contain at least 1 address",
            ));
        }
        for (j, address) in endpoint.addresses.iter().enumerate() {
            let problems = match address_type {
                "IPv4" => match address.parse::<std::net::Ipv4Addr>() {
                    Ok(ip) => special_ip(IpAddr::V4(ip), address),
                    Err(_) => vec!["must be a valid IPv4 address".to_string()],
                },
                "IPv6" => match address.parse::<std::net::Ipv6Addr>() {
                    Ok(ip) => special_ip(IpAddr::V6(ip), address),
                    Err(_) => vec!["must be a valid IPv6 address".to_string()],
                },
                "FQDN" => names::dns1123_subdomain(address),
                // An unknown type is reported once above; its addresses mean nothing.
                _ => Vec::new(),
            };
            for msg in problems {
                causes.push(Cause::invalid(
                    format!("{path}[{j}]"),
                    &go_quote(address),
                    &msg,
                ));
            }
        }
    }
    let mut port_names = BTreeSet::new();
    for (i, port) in slice.ports.iter().flatten().enumerate() {
        let path = format!("ports[{i}]");
        let name = port.name.as_deref().unwrap_or("");
        if !name.is_empty() {
            causes.extend(port_name(name, &path));
        }
        // Unlike a Service's, the unnamed port counts too: two unnamed ports clash.
        if !port_names.insert(name) {
            causes.push(Cause::duplicate(format!("{path}.name"), name));
        }
        causes.extend(one_of(
            port.protocol.as_deref(),
            &format!("{path}.protocol"),
            PROTOCOLS,
        ));
        // No port number means "all ports" (a slice for a headless service without ports).
        if let Some(number) = port.port {
            causes.extend(port_number(number, &format!("{path}.port")));
        }
    }
    causes
}

/// Addresses an endpoint may not have, as Kubernetes' `ValidateEndpointIP` words them: the
/// unspecified address and loopback are nonsensical as a destination, and link-local ones
/// belong to the node (a cloud's metadata service at 169.254.169.254): an endpoint there would
/// let anyone who may write Endpoints send a Service's traffic to the node itself.
fn special_ip(ip: IpAddr, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if ip.is_unspecified() {
        problems.push(format!("may not be unspecified ({text})"));
    }
    if ip.is_loopback() {
        problems.push("may not be in the loopback range (127.0.0.0/8, ::1/128)".to_string());
    }
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    if link_local {
        problems.push("may not be in the link-local range (169.254.0.0/16, fe80::/10)".to_string());
    }
    let link_local_multicast = match ip {
        IpAddr::V4(v4) => v4.octets()[..3] == [224, 0, 0],
        IpAddr::V6(v6) => (v6.segments()[0] & 0xff0f) == 0xff02,
    };
    if link_local_multicast {
        problems.push(
            "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)".to_string(),
        );
    }
    problems
}

/// `{path}.name` must be a DNS label (Service, Endpoints and EndpointSlice ports).
fn port_name(name: &str, path: &str) -> Vec<Cause> {
    names::dns1123_label(name)
        .iter()
        .map(|msg| Cause::invalid(format!("{path}.name"), &go_quote(name), msg))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(spec: serde_json::Value) -> Vec<String> {
        let mut svc: Service =
            serde_json::from_value(json!({"metadata": {"name": "s"}, "spec": spec}))
                .expect("Service");
        crate::admission::defaults::service(&mut svc);
        service(&svc).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn service_problems() {
        let cases: Vec<(serde_json::Value, Vec<&str>)> = vec![
            (json!({"ports": [{"port": 80}]}), vec![]),
            (json!({"ports": [{"port": 80, "targetPort": "http"}], "type": "NodePort"}), vec![]),
            (json!({}), vec!["spec.ports: Required value"]),
            (json!({"clusterIP": "None"}), vec![]),
            (json!({"type": "ExternalName", "externalName": "db.example.com"}), vec![]),
            (json!({"type": "ExternalName"}), vec!["spec.externalName: Required value"]),
            (
                json!({"ports": [{"port": 80}, {"port": 443, "name": "https"}]}),
                vec!["spec.ports[0].name: Required value"],
            ),
            (
                json!({"ports": [{"port": 80, "name": "web"}, {"port": 81, "name": "web"}]}),
                vec![r#"spec.ports[1].name: Duplicate value: "web""#],
            ),
            (
                json!({"ports": [{"port": 0}]}),
                vec![
                    "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
                    "spec.ports[0].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive",
                ],
            ),
            (
                json!({"ports": [{"port": 80}], "type": "Headless"}),
                vec![r#"spec.type: Unsupported value: "Headless": supported values: "ClusterIP", "ExternalName", "LoadBalancer", "NodePort""#],
            ),
            (
                json!({"ports": [{"port": 80, "nodePort": 80}], "type": "NodePort"}),
                vec!["spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767"],
            ),
            (
                json!({"ports": [{"port": 80, "nodePort": 30080}]}),
                vec!["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"],
            ),
            (
                json!({"ports": [{"port": 80}], "clusterIP": "10.0.0"}),
                vec![r#"spec.clusterIP: Invalid value: "10.0.0": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"#],
            ),
        ];
        for (input, want) in cases {
            assert_eq!(problems(input.clone()), want, "{input}");
        }
    }

    #[test]
    fn endpoints_problems() {
        let eps: Endpoints = serde_json::from_value(json!({
            "metadata": {"name": "s"},
            "subsets": [{"addresses": [{"ip": "10.1.0.5"}, {"ip": "pod-a"}, {"ip": "127.0.0.1"}],
                         "notReadyAddresses": [{"ip": "169.254.169.254"}, {"ip": "0.0.0.0"}, {"ip": "fe80::1"}, {"ip": "224.0.0.5"}],
                         "ports": [{"port": 8080, "protocol": "TCP"}]}]
        }))
        .expect("Endpoints");
        let got: Vec<String> = endpoints(&eps).iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            vec![
                r#"subsets[0].addresses[1].ip: Invalid value: "pod-a": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"#,
                r#"subsets[0].addresses[2].ip: Invalid value: "127.0.0.1": may not be in the loopback range (127.0.0.0/8, ::1/128)"#,
                r#"subsets[0].notReadyAddresses[0].ip: Invalid value: "169.254.169.254": may not be in the link-local range (169.254.0.0/16, fe80::/10)"#,
                r#"subsets[0].notReadyAddresses[1].ip: Invalid value: "0.0.0.0": may not be unspecified (0.0.0.0)"#,
                r#"subsets[0].notReadyAddresses[2].ip: Invalid value: "fe80::1": may not be in the link-local range (169.254.0.0/16, fe80::/10)"#,
                r#"subsets[0].notReadyAddresses[3].ip: Invalid value: "224.0.0.5": may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"#,
            ]
        );
    }

    #[test]
    fn endpoint_slice_problems() {
        let slice = |body: serde_json::Value| -> EndpointSlice {
            let mut slice: EndpointSlice = serde_json::from_value(body).expect("EndpointSlice");
            crate::admission::defaults::endpoint_slice(&mut slice);
            slice
        };
        let cases: Vec<(serde_json::Value, Vec<&str>)> = vec![
            (
                json!({"addressType": "IPv4", "endpoints": [{"addresses": ["10.1.0.5"]}],
                    "ports": [{"port": 80}]}),
                vec![],
            ),
            (
                json!({"endpoints": []}),
                vec!["addressType: Required value"],
            ),
            (
                json!({"addressType": "IP", "endpoints": [{"addresses": ["10.1.0.5"]}]}),
                vec![
                    r#"addressType: Unsupported value: "IP": supported values: "FQDN", "IPv4", "IPv6""#,
                ],
            ),
            (
                json!({"addressType": "IPv4", "endpoints": [{"addresses": []}, {"addresses": ["fd00::1"]}]}),
                vec![
                    "endpoints[0].addresses: Required value: must contain at least 1 address",
                    r#"endpoints[1].addresses[0]: Invalid value: "fd00::1": must be a valid IPv4 address"#,
                ],
            ),
            (
                json!({"addressType": "IPv4", "endpoints": [{"addresses": ["127.0.0.1", "169.254.169.254"]}]}),
                vec![
                    r#"endpoints[0].addresses[0]: Invalid value: "127.0.0.1": may not be in the loopback range (127.0.0.0/8, ::1/128)"#,
                    r#"endpoints[0].addresses[1]: Invalid value: "169.254.169.254": may not be in the link-local range (169.254.0.0/16, fe80::/10)"#,
                ],
            ),
            (
                json!({"addressType": "IPv6", "endpoints": [{"addresses": ["::1"]}]}),
                vec![
                    r#"endpoints[0].addresses[0]: Invalid value: "::1": may not be in the loopback range (127.0.0.0/8, ::1/128)"#,
                ],
            ),
            (
                json!({"addressType": "IPv4", "endpoints": [],
                    "ports": [{"port": 80}, {"port": 81}, {"name": "Web", "port": 0, "protocol": "HTTP"}]}),
                vec![
                    r#"ports[1].name: Duplicate value: """#,
                    r#"ports[2].name: Invalid value: "Web": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"#,
                    r#"ports[2].protocol: Unsupported value: "HTTP": supported values: "SCTP", "TCP", "UDP""#,
                    "ports[2].port: Invalid value: 0: must be between 1 and 65535, inclusive",
                ],
            ),
        ];
        for (input, want) in cases {
            let got: Vec<String> = endpoint_slice(&slice(input.clone()))
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(got, want, "{input}");
        }
    }
}
