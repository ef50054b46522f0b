//! Subresources served by modules of their own rather than by the generic verbs.
//!
//! Most subresources are the object itself (`status`, which [`crate::objects`] serves). These
//! are not: a pod's log and exec streams come from its node's agent ([`crate::pod_streams`]), a
//! binding assigns a pod to a node ([`crate::binding`]), `scale` is a view of a workload's
//! replica count ([`crate::scale`]), a ServiceAccount's `token` is signed by
//! [`crate::auth::service_accounts`], and a node's `proxy` reads its agent's measurements
//! ([`crate::measurements`]). [`SUBRESOURCES`] says which requests go where; a request
//! it does not match goes to the generic verbs.
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, request::Parts, Method};
use axum::response::Response;

use crate::app::{verb_of, App, MAX_BODY_BYTES};
use crate::metrics::Counted;
use crate::query::Params;
use crate::respond;
use crate::target::Target;

/// Which module serves a subresource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// `GET .../pods/NAME/log`: the container's log, from the agent.
    Log,
    /// `.../pods/NAME/exec`: a WebSocket to a process in the container, through the agent.
    Exec,
    /// `POST .../pods/NAME/binding`: the scheduler's assignment of the pod to a node.
    Binding,
    /// `GET`/`PUT`/`PATCH .../NAME/scale`: the workload's `Scale` view.
    Scale,
    /// `POST .../serviceaccounts/NAME/token`: a signed token for the account.
    Token,
    /// `GET /api/v1/nodes/NAME/proxy/PATH`: the node agent's measurements (Prometheus text,
    /// the Summary API), as a Prometheus configured for Kubernetes scrapes them.
    NodeProxy,
}

/// One row: requests for `subresource` of `resource` (qualified), with `method` (`None`: any).
pub struct Subresource {
    pub resource: &'static str,
    pub subresource: &'static str,
    pub method: Option<&'static str>,
    pub served: Served,
}

const fn row(
    resource: &'static str,
    subresource: &'static str,
    method: Option<&'static str>,
    served: Served,
) -> Subresource {
    Subresource {
        resource,
        subresource,
        method,
        served,
    }
}

/// Every subresource the generic verbs do not serve. Each must also be listed in the
/// resource's `subresources` in skiff-api's table (discovery shows them from there).
pub static SUBRESOURCES: &[Subresource] = &[
    row("pods", "log", Some("GET"), Served::Log),
    row("pods", "exec", None, Served::Exec),
    row("pods", "binding", Some("POST"), Served::Binding),
    row("deployments.apps", "scale", None, Served::Scale),
    row("replicasets.apps", "scale", None, Served::Scale),
    row("statefulsets.apps", "scale", None, Served::Scale),
    row("serviceaccounts", "token", Some("POST"), Served::Token),
    row("nodes", "proxy", Some("GET"), Served::NodeProxy),
];

/// The module that serves `method` on `target`, if it is one of [`SUBRESOURCES`].
pub fn route(target: &Target, method: &Method) -> Option<Served> {
    let subresource = target.subresource.as_deref()?;
    let resource = target.info.qualified_resource();
    SUBRESOURCES
        .iter()
        .find(|row| {
            row.resource == resource
                && row.subresource == subresource
                && row.method.is_none_or(|m| m == method.as_str())
        })
        .map(|row| row.served)
}

/// Serves the request for `target` with `served`'s module, and says what it counts as in the
/// request metrics.
pub async fn serve(
    app: &Arc<App>,
    served: Served,
    target: &Target,
    parts: Parts,
    body: Body,
) -> (Counted, Response) {
    let query = parts.uri.query();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // Bodies too large for the limit arrive empty, and the module says what is missing.
    let bytes = |body: Body| async move {
        axum::body::to_bytes(body, MAX_BODY_BYTES)
            .await
            .unwrap_or_default()
    };
    let (counted, result) = match served {
        Served::Log => (
            Counted::new("GET", "pods/log"),
            crate::pod_streams::logs(app, target, query).await,
        ),
        Served::Exec => {
            let request = Request::from_parts(parts, body);
            let response = crate::pod_streams::exec(app, target, request).await;
            return (Counted::new("CONNECT", "pods/exec"), or_error(response));
        }
        Served::NodeProxy => (
            Counted::new("GET", "nodes/proxy"),
            crate::measurements::node_proxy(app, target).await,
        ),
        Served::Binding => (
            Counted::new("CREATE", "pods/binding"),
            crate::binding::serve(app, target, &bytes(body).await).await,
        ),
        Served::Token => (
            Counted::new("CREATE", "serviceaccounts/token"),
            crate::auth::service_accounts::token_request(
                app,
                parts
                    .extensions
                    .get::<crate::auth::Requester>()
                    .map(|r| &r.0),
                target,
                content_type.as_deref(),
                &bytes(body).await,
            )
            .await,
        ),
        Served::Scale => (
            Counted::new(
                verb_of(&parts.method, target, &Params::default()),
                target.info.resource,
            ),
            crate::scale::serve(
                app,
                target,
                &parts.method,
                query,
                content_type.as_deref(),
                &bytes(body).await,
            )
            .await,
        ),
    };
    (counted, or_error(result))
}

fn or_error(result: Result<Response, skiff_api::ApiError>) -> Response {
    result.unwrap_or_else(respond::error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(path: &str) -> Target {
        crate::target::parse(path)
            .expect("served")
            .expect("a resource path")
    }

    #[test]
    fn requests_route_by_resource_subresource_and_method() {
        let pod = "/api/v1/namespaces/a/pods/web";
        let deploy = "/apis/apps/v1/namespaces/a/deployments/web";
        let cases = [
            (format!("{pod}/log"), Method::GET, Some(Served::Log)),
            (format!("{pod}/log"), Method::POST, None),
            (format!("{pod}/exec"), Method::GET, Some(Served::Exec)),
            (format!("{pod}/exec"), Method::POST, Some(Served::Exec)),
            (
                format!("{pod}/binding"),
                Method::POST,
                Some(Served::Binding),
            ),
            (format!("{pod}/binding"), Method::GET, None),
            (format!("{pod}/status"), Method::GET, None),
            (pod.to_string(), Method::GET, None),
            (
                format!("{deploy}/scale"),
                Method::PATCH,
                Some(Served::Scale),
            ),
            (format!("{deploy}/status"), Method::PUT, None),
            (
                "/apis/apps/v1/namespaces/a/replicasets/r/scale".into(),
                Method::GET,
                Some(Served::Scale),
            ),
            (
                "/api/v1/nodes/n1/proxy/metrics/cadvisor".into(),
                Method::GET,
                Some(Served::NodeProxy),
            ),
            ("/api/v1/nodes/n1/proxy/metrics".into(), Method::POST, None),
        ];
        for (path, method, expected) in cases {
            assert_eq!(route(&target(&path), &method), expected, "{method} {path}");
        }
    }

    #[test]
    fn every_row_is_a_subresource_the_resource_lists() {
        for row in SUBRESOURCES {
            let info = skiff_api::resources::RESOURCES
                .iter()
                .find(|r| r.qualified_resource() == row.resource)
                .unwrap_or_else(|| panic!("{} is not served", row.resource));
            assert!(
                info.subresources.contains(&row.subresource),
                "{}/{}",
                row.resource,
                row.subresource
            );
        }
    }
}
