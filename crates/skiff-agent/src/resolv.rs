//! A pod's /etc/resolv.conf, by its `dnsPolicy` and `dnsConfig` (Kubernetes' rules). Pure.
use k8s_openapi::api::core::v1::Pod;

/// The cluster DNS a pod uses, when the node runs one.
#[derive(Debug, Clone)]
pub struct ClusterDns {
    pub nameserver: String,
    /// `cluster.local`.
    pub domain: String,
}

/// `spec.dnsPolicy`: where a pod's name lookups go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DnsPolicy {
    /// The cluster DNS, with the namespace's search path (the default); hostNetwork pods
    /// keep the node's resolver.
    #[default]
    ClusterFirst,
    /// The cluster DNS, also for hostNetwork pods.
    ClusterFirstWithHostNet,
    /// The node's resolver.
    Default,
    /// Only what `dnsConfig` says.
    None,
}

impl DnsPolicy {
    /// The pod's policy; absent (or a value admission would have refused) is `ClusterFirst`.
    pub fn of(pod: &Pod) -> DnsPolicy {
        match pod.spec.as_ref().and_then(|s| s.dns_policy.as_deref()) {
            Some("ClusterFirstWithHostNet") => DnsPolicy::ClusterFirstWithHostNet,
            Some("Default") => DnsPolicy::Default,
            Some("None") => DnsPolicy::None,
            _ => DnsPolicy::ClusterFirst,
        }
    }
}

/// The pod's /etc/resolv.conf, by its dnsPolicy (Kubernetes' rules): `ClusterFirst` (the
/// default) points at the cluster DNS with the namespace's search path, except for
/// hostNetwork pods, which keep the node's unless they ask for `ClusterFirstWithHostNet`;
/// `Default` is the node's; `None` is only what `dnsConfig` says. `dnsConfig` adds to all.
pub fn resolv_conf(pod: &Pod, node_resolv: &str, dns: Option<&ClusterDns>) -> String {
    let spec = pod.spec.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let host_network = spec.host_network.unwrap_or(false);
    let policy = DnsPolicy::of(pod);
    let (mut nameservers, mut searches, mut options): (Vec<String>, Vec<String>, Vec<String>) =
        (Vec::new(), Vec::new(), Vec::new());
    let node = || {
        let mut n = (Vec::new(), Vec::new(), Vec::new());
        for line in node_resolv.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => n.0.extend(words.map(String::from)),
                Some("search") | Some("domain") => n.1.extend(words.map(String::from)),
                Some("options") => n.2.extend(words.map(String::from)),
                _ => {}
            }
        }
        n
    };
    let cluster = match policy {
        DnsPolicy::ClusterFirst => !host_network,
        DnsPolicy::ClusterFirstWithHostNet => true,
        DnsPolicy::Default | DnsPolicy::None => false,
    };
    match (policy, dns) {
        (DnsPolicy::None, _) => {}
        (_, Some(dns)) if cluster => {
            nameservers.push(dns.nameserver.clone());
            searches = vec![
                format!("{namespace}.svc.{}", dns.domain),
                format!("svc.{}", dns.domain),
                dns.domain.clone(),
            ];
            searches.extend(node().1);
            options.push("ndots:5".into());
        }
        _ => (nameservers, searches, options) = node(),
    }
    if let Some(config) = &spec.dns_config {
        nameservers.extend(config.nameservers.iter().flatten().cloned());
        searches.extend(config.searches.iter().flatten().cloned());
        for option in config.options.iter().flatten() {
            let Some(name) = &option.name else { continue };
            options.retain(|o| o.split(':').next() != Some(name.as_str()));
            options.push(match &option.value {
                Some(v) => format!("{name}:{v}"),
                None => name.clone(),
            });
        }
    }
    searches.dedup();
    let mut text = String::new();
    if !searches.is_empty() {
        text.push_str(&format!("search {}\n", searches.join(" ")));
    }
    for ns in nameservers.iter().take(3) {
        text.push_str(&format!("nameserver {ns}\n"));
    }
    if !options.is_empty() {
        text.push_str(&format!("options {}\n", options.join(" ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_follows_the_dns_policy() {
        let dns = ClusterDns {
            nameserver: "10.42.0.1".into(),
            domain: "cluster.local".into(),
        };
        let node = "nameserver 192.0.2.53\nsearch corp.example\noptions edns0\n";
        let pod = |spec: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p", "namespace": "shop"},
                "spec": spec
            }))
            .expect("pod")
        };
        let cases = [
            (
                serde_json::json!({"containers": []}),
                "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example\nnameserver 10.42.0.1\noptions ndots:5\n",
            ),
            (
                serde_json::json!({"containers": [], "hostNetwork": true}),
                "search corp.example\nnameserver 192.0.2.53\noptions edns0\n",
            ),
            (
                serde_json::json!({"containers": [], "hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"}),
                "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example\nnameserver 10.42.0.1\noptions ndots:5\n",
            ),
            (
                serde_json::json!({"containers": [], "dnsPolicy": "Default"}),
                "search corp.example\nnameserver 192.0.2.53\noptions edns0\n",
            ),
            (
                serde_json::json!({"containers": [], "dnsPolicy": "None", "dnsConfig": {
                    "nameservers": ["1.1.1.1"], "searches": ["a.example"],
                    "options": [{"name": "ndots", "value": "2"}]}}),
                "search a.example\nnameserver 1.1.1.1\noptions ndots:2\n",
            ),
        ];
        for (spec, expected) in cases {
            assert_eq!(
                resolv_conf(&pod(spec.clone()), node, Some(&dns)),
                expected,
                "{spec}"
            );
        }
    }
}
