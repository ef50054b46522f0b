//! Requests the API server passes on to a node's agent: `pods/log` (and `pods/exec`).
//!
//! As in Kubernetes, the API server finds the pod's node, then calls the agent's own HTTPS
//! endpoint (`status.daemonEndpoints.kubeletEndpoint.Port` on the node's InternalIP).
//! Authenticated both ways: the API server checks the agent's certificate against the cluster
//! CA (the agent got it from `/skiff/v1/nodes/NAME/certificate`), and the agent checks the
//! bearer token the API server presents (the node secret).
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::Response;
use serde_json::Value;
use skiff_api::ApiError;

use crate::app::App;
use crate::target::Target;

type Result<T, E = ApiError> = std::result::Result<T, E>;

/// The kubelet port when a node does not say.
const DEFAULT_AGENT_PORT: i64 = 10250;

/// One HTTPS client for every agent, trusting only the cluster CA.
fn agent_client(app: &App) -> Result<&'static reqwest::Client> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    if let Some(client) = CLIENT.get() {
        return Ok(client);
    }
    let ca = reqwest::Certificate::from_pem(app.cluster.ca_cert_pem.as_bytes())
        .map_err(|e| ApiError::Internal(format!("the cluster CA: {e}")))?;
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .https_only(true)
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| ApiError::Internal(format!("agent client: {e}")))?;
    Ok(CLIENT.get_or_init(|| client))
}

/// `GET /api/v1/namespaces/{ns}/pods/{name}/log`.
pub async fn logs(app: &Arc<App>, target: &Target, query: Option<&str>) -> Result<Response> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|e| ApiError::BadRequest(format!("invalid query parameters: {e}")))?;
    let param = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let (pod, namespace, name) = pod_of(app, target).await?;
    let container = choose_container(&pod, &name, param("container"))?;
    let previous = param("previous").is_some_and(|v| v == "true");
    if !previous {
        if let Some(reason) = waiting_reason(&pod, &container) {
            return Err(ApiError::BadRequest(format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: {reason}"
            )));
        }
    }
    let base = agent_url(app, &pod, &name)?;
    let mut url = format!("{base}/containerLogs/{namespace}/{name}/{container}");
    let passed: Vec<(String, String)> = pairs
        .into_iter()
        .filter(|(k, _)| {
            matches!(
                k.as_str(),
                "follow"
                    | "previous"
                    | "tailLines"
                    | "sinceSeconds"
                    | "sinceTime"
                    | "timestamps"
                    | "limitBytes"
            )
        })
        .collect();
    if !passed.is_empty() {
        url.push('?');
        url.push_str(&serde_urlencoded::to_string(&passed).unwrap_or_default());
    }
    let response = agent_client(app)?
        .get(&url)
        .bearer_auth(&app.node_secret)
        .send()
        .await
        .map_err(|e| ApiError::ServiceUnavailable(format!("reaching the node's agent: {e}")))?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        return Err(match status.as_u16() {
            404 => ApiError::BadRequest(text),
            _ => ApiError::Internal(text),
        });
    }
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from_stream(response.bytes_stream()))
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// The pod a subresource request is about, with its namespace and name.
pub(crate) async fn pod_of(app: &App, target: &Target) -> Result<(Arc<Value>, String, String)> {
    let name = target.name.clone().unwrap_or_default();
    let namespace = target.namespace.clone().unwrap_or_default();
    let key = target.key();
    let pod = match app.store.get(&key) {
        Some(pod) => pod,
        None => {
            app.store
                .linearize()
                .await
                .map_err(|e| ApiError::ServiceUnavailable(e.to_string()))?;
            app.store.get(&key).ok_or_else(|| ApiError::NotFound {
                resource: "pods".into(),
                name: name.clone(),
            })?
        }
    };
    Ok((pod, namespace, name))
}

/// The container asked for, or the only one; Kubernetes' messages otherwise.
pub(crate) fn choose_container(pod: &Value, name: &str, asked: Option<String>) -> Result<String> {
    let names = |path: &str| -> Vec<String> {
        pod.pointer(path)
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| c.get("name").and_then(Value::as_str).map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let containers = names("/spec/containers");
    let init = names("/spec/initContainers");
    match asked.filter(|c| !c.is_empty()) {
        Some(c) if containers.contains(&c) || init.contains(&c) => Ok(c),
        Some(c) => Err(ApiError::BadRequest(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => Err(ApiError::BadRequest(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            containers.join(" ")
        ))),
    }
}

/// `ContainerCreating` and the like when the container has not started yet.
fn waiting_reason(pod: &Value, container: &str) -> Option<String> {
    let statuses = ["/status/containerStatuses", "/status/initContainerStatuses"];
    let status = statuses.iter().find_map(|path| {
        pod.pointer(path)?
            .as_array()?
            .iter()
            .find(|s| s.get("name").and_then(Value::as_str) == Some(container))
    });
    match status {
        None => Some("ContainerCreating".into()),
        Some(s) => {
            let waiting = s.pointer("/state/waiting")?;
            // A container that ran before (restarting) still has logs to show.
            if s.pointer("/lastState/terminated").is_some() {
                return None;
            }
            Some(
                waiting
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("ContainerCreating")
                    .to_string(),
            )
        }
    }
}

/// `https://IP:PORT` of the agent on the pod's node.
pub(crate) fn agent_url(app: &App, pod: &Value, name: &str) -> Result<String> {
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::BadRequest(format!("pod {name} does not have a host assigned")))?;
    let node_key = skiff_store::object_key("nodes", "", node_name);
    let node = app.store.get(&node_key).ok_or_else(|| ApiError::NotFound {
        resource: "nodes".into(),
        name: node_name.into(),
    })?;
    let address = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|addresses| {
            addresses
                .iter()
                .find(|a| a.get("type").and_then(Value::as_str) == Some("InternalIP"))
        })
        .and_then(|a| a.get("address").and_then(Value::as_str))
        .ok_or_else(|| {
            ApiError::ServiceUnavailable(format!("node {node_name} has no InternalIP"))
        })?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_i64)
        .unwrap_or(DEFAULT_AGENT_PORT);
    let host = if address.contains(':') {
        format!("[{address}]")
    } else {
        address.to_string()
    };
    Ok(format!("https://{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_are_chosen_as_kubernetes_does() {
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}});
        assert_eq!(
            choose_container(&pod, "p", Some("b".into())).ok(),
            Some("b".into())
        );
        assert_eq!(
            choose_container(&pod, "p", Some("i".into())).ok(),
            Some("i".into())
        );
        let err = choose_container(&pod, "p", None).expect_err("two containers");
        assert!(err.to_string().contains("choose one of: [a b]"), "{err}");
        let err = choose_container(&pod, "p", Some("z".into())).expect_err("no z");
        assert!(
            err.to_string()
                .contains("container z is not valid for pod p"),
            "{err}"
        );
        let single = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(choose_container(&single, "p", None).ok(), Some("a".into()));
    }

    #[test]
    fn waiting_containers_have_no_logs_yet() {
        let pod = json!({"status": {"containerStatuses": [
            {"name": "a", "state": {"waiting": {"reason": "ErrImagePull"}}},
            {"name": "b", "state": {"running": {}}},
            {"name": "c", "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {"exitCode": 1}}}
        ]}});
        assert_eq!(waiting_reason(&pod, "a").as_deref(), Some("ErrImagePull"));
        assert_eq!(waiting_reason(&pod, "b"), None);
        assert_eq!(waiting_reason(&pod, "c"), None);
        assert_eq!(
            waiting_reason(&pod, "d").as_deref(),
            Some("ContainerCreating")
        );
    }
}
