//! Services and where their traffic goes: Endpoints and EndpointSlices.

use jiff::Timestamp;
use serde_json::Value;

use super::{age, array_at, column, docs, format_labels, int_at, name, or_none, str_at};
use super::{strings_at, wide, Printer, AGE, NAME};

pub(super) const SERVICES: Printer = Printer::new(
    &[
        NAME,
        column("Type", "string", docs::SVC_TYPE),
        column("Cluster-IP", "string", docs::SVC_CLUSTER_IP),
        column("External-IP", "string", docs::SVC_EXTERNAL_IPS),
        column("Port(s)", "string", docs::SVC_PORTS),
        AGE,
        wide("Selector", "string", docs::SVC_SELECTOR),
    ],
    service_cells,
);

fn service_cells(svc: &Value, now: Timestamp) -> Vec<Value> {
    let cluster_ip = array_at(svc, "/spec/clusterIPs")
        .first()
        .and_then(Value::as_str)
        .unwrap_or_else(|| str_at(svc, "/spec/clusterIP"));
    vec![
        name(svc),
        str_at(svc, "/spec/type").into(),
        or_none(cluster_ip.to_string()).into(),
        service_external_ip(svc).into(),
        or_none(service_ports(svc)).into(),
        age(svc, now).into(),
        format_labels(svc.pointer("/spec/selector")).into(),
    ]
}

/// EXTERNAL-IP: the external IPs; for a LoadBalancer also its ingress addresses, and
/// `<pending>` while it has none.
fn service_external_ip(svc: &Value) -> String {
    let external: Vec<&str> = strings_at(svc, "/spec/externalIPs");
    match str_at(svc, "/spec/type") {
        "ClusterIP" | "NodePort" if external.is_empty() => "<none>".into(),
        "ClusterIP" | "NodePort" => external.join(","),
        "LoadBalancer" => {
            let mut ingress: Vec<&str> = array_at(svc, "/status/loadBalancer/ingress")
                .iter()
                .filter_map(|i| {
                    let ip = i.get("ip").and_then(Value::as_str).unwrap_or("");
                    let host = i.get("hostname").and_then(Value::as_str).unwrap_or("");
                    [ip, host].into_iter().find(|s| !s.is_empty())
                })
                .collect();
            ingress.sort_unstable();
            ingress.dedup();
            ingress.extend(external);
            if ingress.is_empty() {
                "<pending>".into()
            } else {
                ingress.join(",")
            }
        }
        "ExternalName" => str_at(svc, "/spec/externalName").into(),
        _ => "<unknown>".into(),
    }
}

/// PORT(S): `80/TCP`, or `80:30080/TCP` when the port also has a node port.
fn service_ports(svc: &Value) -> String {
    array_at(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let port = int_at(p, "/port");
            let protocol = Some(str_at(p, "/protocol"))
                .filter(|s| !s.is_empty())
                .unwrap_or("TCP");
            match int_at(p, "/nodePort") {
                0 => format!("{port}/{protocol}"),
                node_port => format!("{port}:{node_port}/{protocol}"),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

pub(super) const ENDPOINTS: Printer = Printer::new(
    &[
        NAME,
        column("Endpoints", "string", docs::ENDPOINTS_SUBSETS),
        AGE,
    ],
    endpoints_cells,
);

fn endpoints_cells(ep: &Value, now: Timestamp) -> Vec<Value> {
    let subsets = array_at(ep, "/subsets");
    let endpoints = if subsets.is_empty() {
        "<none>".to_string()
    } else {
        // Every address with every port of its subset; addresses alone when a subset has no
        // ports (a headless service).
        let mut all = Vec::new();
        for subset in subsets {
            let ips: Vec<&str> = array_at(subset, "/addresses")
                .iter()
                .map(|a| a.get("ip").and_then(Value::as_str).unwrap_or(""))
                .collect();
            let ports = array_at(subset, "/ports");
            if ports.is_empty() {
                all.extend(ips.iter().map(|ip| ip.to_string()));
            }
            for port in ports {
                let port = int_at(port, "/port");
                all.extend(ips.iter().map(|ip| join_host_port(ip, port)));
            }
        }
        first_three(all).unwrap_or_default()
    };
    vec![name(ep), endpoints.into(), age(ep, now).into()]
}

/// `host:port`, with brackets around an IPv6 address.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The first three items joined with commas and `+ N more...` for the rest; `None` when empty.
fn first_three(items: Vec<String>) -> Option<String> {
    if items.is_empty() {
        return None;
    }
    let shown = items[..items.len().min(3)].join(",");
    Some(match items.len() {
        n if n > 3 => format!("{shown} + {} more...", n - 3),
        _ => shown,
    })
}

pub(super) const ENDPOINTSLICES: Printer = Printer::new(
    &[
        NAME,
        column("AddressType", "string", docs::SLICE_ADDRESS_TYPE),
        column("Ports", "string", docs::SLICE_PORTS),
        column("Endpoints", "string", docs::SLICE_ENDPOINTS),
        AGE,
    ],
    endpointslice_cells,
);

fn endpointslice_cells(slice: &Value, now: Timestamp) -> Vec<Value> {
    let ports = array_at(slice, "/ports")
        .iter()
        .map(
            |p| match (p.get("port").and_then(Value::as_i64), p.get("name")) {
                (Some(port), _) => port.to_string(),
                (None, Some(Value::String(name))) => name.clone(),
                _ => "*".to_string(),
            },
        )
        .collect();
    let addresses = array_at(slice, "/endpoints")
        .iter()
        .flat_map(|e| strings_at(e, "/addresses"))
        .map(String::from)
        .collect();
    vec![
        name(slice),
        str_at(slice, "/addressType").into(),
        first_three(ports)
            .unwrap_or_else(|| "<unset>".into())
            .into(),
        first_three(addresses)
            .unwrap_or_else(|| "<unset>".into())
            .into(),
        age(slice, now).into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::tests::{ago, now};
    use super::*;
    use serde_json::json;

    fn service(spec: Value, status: Value) -> Value {
        json!({"metadata": {"name": "web", "creationTimestamp": ago(90)}, "spec": spec, "status": status})
    }

    #[test]
    fn services_show_their_addresses_and_ports() {
        let cases: Vec<(&str, Value, [&str; 4])> = vec![
            (
                "cluster IP",
                service(
                    json!({"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                           "ports": [{"port": 80, "protocol": "TCP"}], "selector": {"app": "web", "tier": "fe"}}),
                    json!({}),
                ),
                ["10.96.0.10", "<none>", "80/TCP", "app=web,tier=fe"],
            ),
            (
                "node ports",
                service(
                    json!({"type": "NodePort", "clusterIPs": ["10.96.0.11"],
                           "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"},
                                     {"port": 53, "nodePort": 30053, "protocol": "UDP"}]}),
                    json!({}),
                ),
                [
                    "10.96.0.11",
                    "<none>",
                    "80:30080/TCP,53:30053/UDP",
                    "<none>",
                ],
            ),
            (
                "load balancer waiting for an address",
                service(
                    json!({"type": "LoadBalancer", "clusterIPs": ["10.96.0.12"],
                           "ports": [{"port": 80, "nodePort": 31000}]}),
                    json!({"loadBalancer": {}}),
                ),
                ["10.96.0.12", "<pending>", "80:31000/TCP", "<none>"],
            ),
            (
                "load balancer with addresses",
                service(
                    json!({"type": "LoadBalancer", "clusterIPs": ["10.96.0.12"], "externalIPs": ["1.2.3.4"],
                           "ports": [{"port": 80, "nodePort": 31000, "protocol": "TCP"}]}),
                    json!({"loadBalancer": {"ingress": [{"ip": "192.168.1.20"}, {"hostname": "lb.example.com"}]}}),
                ),
                [
                    "10.96.0.12",
                    "192.168.1.20,lb.example.com,1.2.3.4",
                    "80:31000/TCP",
                    "<none>",
                ],
            ),
            (
                "external name",
                service(
                    json!({"type": "ExternalName", "externalName": "db.example.com"}),
                    json!({}),
                ),
                ["<none>", "db.example.com", "<none>", "<none>"],
            ),
        ];
        for (case, svc, want) in cases {
            let cells = service_cells(&svc, now());
            assert_eq!([&cells[2], &cells[3], &cells[4], &cells[6]], want, "{case}");
            assert_eq!(cells[5], "90s", "{case}");
        }
    }

    #[test]
    fn endpoints_list_three_addresses_and_count_the_rest() {
        let endpoints = |subsets: Value| {
            let ep = json!({"metadata": {"name": "web"}, "subsets": subsets});
            endpoints_cells(&ep, now())[1].clone()
        };
        assert_eq!(endpoints(json!([])), "<none>");
        assert_eq!(
            endpoints(
                json!([{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 8080}]}])
            ),
            "10.0.0.1:8080,10.0.0.2:8080"
        );
        assert_eq!(
            endpoints(
                json!([{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
                              "ports": [{"port": 80}, {"port": 443}]}])
            ),
            "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more..."
        );
        assert_eq!(
            endpoints(json!([{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 80}]}])),
            "[fd00::1]:80"
        );
    }

    #[test]
    fn endpointslices_show_ports_and_addresses() {
        let slice = json!({
            "metadata": {"name": "web-abcde"}, "addressType": "IPv4",
            "ports": [{"name": "http", "port": 80}, {"name": "metrics"}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}],
        });
        let cells = endpointslice_cells(&slice, now());
        assert_eq!(cells[1..4], ["IPv4", "80,metrics", "10.0.0.1,10.0.0.2"]);
        let empty = json!({"metadata": {"name": "e"}, "addressType": "IPv4"});
        assert_eq!(
            endpointslice_cells(&empty, now())[2..4],
            ["<unset>", "<unset>"]
        );
    }
}
