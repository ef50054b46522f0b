//! Jobs: a selector that picks the template (the server's, unless `manualSelector`), pods that
//! end (`OnFailure` or `Never`), counts that are not negative, and a failure policy on exit
//! codes.

use k8s_openapi::api::batch::v1::{CronJob, Job};

use super::{
    annotations, go_label_selector, go_string_map, label_selector, labels, non_negative, one_of,
    pod,
};
use crate::selector::LabelSelector;
use crate::status::Cause;

pub(in crate::admission) fn job(job: &Job) -> Vec<Cause> {
    let spec = job.spec.clone().unwrap_or_default();
    let mut causes = Vec::new();
    for (value, path) in [
        (spec.parallelism, "spec.parallelism"),
        (spec.completions, "spec.completions"),
        (spec.backoff_limit, "spec.backoffLimit"),
        (
            spec.ttl_seconds_after_finished,
            "spec.ttlSecondsAfterFinished",
        ),
    ] {
        causes.extend(non_negative(value.map(i64::from), path));
    }
    if let Some(deadline) = spec.active_deadline_seconds.filter(|d| *d <= 0) {
        causes.push(Cause::invalid(
            "spec.activeDeadlineSeconds",
            &deadline.to_string(),
            "must be greater than 0",
        ));
    }
    causes.extend(one_of(
        spec.completion_mode.as_deref(),
        "spec.completionMode",
        &["Indexed", "NonIndexed"],
    ));
    if spec.completion_mode.as_deref() == Some("Indexed") && spec.completions.is_none() {
        causes.push(Cause::required_because(
            "spec.completions",
            "when completion mode is Indexed",
        ));
    }
    for (i, rule) in spec
        .pod_failure_policy
        .iter()
        .flat_map(|p| p.rules.iter())
        .enumerate()
    {
        let path = format!("spec.podFailurePolicy.rules[{i}]");
        causes.extend(one_of(
            Some(rule.action.as_str()),
            &format!("{path}.action"),
            &["Count", "FailIndex", "FailJob", "Ignore"],
        ));
        if let Some(codes) = &rule.on_exit_codes {
            causes.extend(one_of(
                Some(codes.operator.as_str()),
                &format!("{path}.onExitCodes.operator"),
                &["In", "NotIn"],
            ));
            if codes.values.is_empty() {
                causes.push(Cause::required(format!("{path}.onExitCodes.values")));
            }
        }
    }

    // The selector (made by the server unless the Job chose its own) and the template.
    let meta = spec.template.metadata.clone().unwrap_or_default();
    let template_labels = meta.labels.clone().unwrap_or_default();
    match &spec.selector {
        None => causes.push(Cause::required("spec.selector")),
        Some(selector) => {
            causes.extend(label_selector(selector, "spec.selector"));
            let selects = LabelSelector::from_k8s(selector)
                .is_ok_and(|s| !s.is_empty() && s.matches(&template_labels));
            if !selects {
                causes.push(Cause::invalid(
                    "spec.template.metadata.labels",
                    &go_string_map(meta.labels.as_ref()),
                    &format!(
                        "`selector` does not match template `labels` ({})",
                        go_label_selector(selector)
                    ),
                ));
            }
        }
    }
    causes.extend(labels(
        meta.labels.as_ref(),
        "spec.template.metadata.labels",
    ));
    causes.extend(annotations(
        meta.annotations.as_ref(),
        "spec.template.metadata.annotations",
    ));
    let pod_spec = spec.template.spec.clone().unwrap_or_default();
    causes.extend(pod::pod_spec(&pod_spec, "spec.template.spec"));
    let restart = pod_spec.restart_policy.as_deref().unwrap_or("");
    if !matches!(restart, "OnFailure" | "Never") {
        causes.push(Cause::not_supported(
            "spec.template.spec.restartPolicy",
            restart,
            &["OnFailure", "Never"],
        ));
    }
    causes
}

/// A CronJob: a schedule that parses, a time zone that exists, a policy, history limits, and a
/// Job template whose pods end.
pub(in crate::admission) fn cron_job(cj: &CronJob) -> Vec<Cause> {
    let spec = cj.spec.clone().unwrap_or_default();
    let mut causes = Vec::new();
    if spec.schedule.trim().is_empty() {
        causes.push(Cause::required("spec.schedule"));
    } else if let Err(e) = crate::schedule::Schedule::parse(&spec.schedule) {
        causes.push(Cause::invalid(
            "spec.schedule",
            &crate::status::go_quote(&spec.schedule),
            &e,
        ));
    }
    if let Err(e) = crate::schedule::zone(spec.time_zone.as_deref()) {
        causes.push(Cause::invalid(
            "spec.timeZone",
            &crate::status::go_quote(spec.time_zone.as_deref().unwrap_or("")),
            &e,
        ));
    }
    causes.extend(one_of(
        spec.concurrency_policy.as_deref(),
        "spec.concurrencyPolicy",
        &["Allow", "Forbid", "Replace"],
    ));
    for (value, path) in [
        (
            spec.starting_deadline_seconds,
            "spec.startingDeadlineSeconds",
        ),
        (
            spec.successful_jobs_history_limit.map(i64::from),
            "spec.successfulJobsHistoryLimit",
        ),
        (
            spec.failed_jobs_history_limit.map(i64::from),
            "spec.failedJobsHistoryLimit",
        ),
    ] {
        causes.extend(non_negative(value, path));
    }
    let job = spec.job_template.spec.clone().unwrap_or_default();
    let pod_spec = job.template.spec.clone().unwrap_or_default();
    causes.extend(pod::pod_spec(
        &pod_spec,
        "spec.jobTemplate.spec.template.spec",
    ));
    let restart = pod_spec.restart_policy.as_deref().unwrap_or("");
    if !matches!(restart, "OnFailure" | "Never") {
        causes.push(Cause::not_supported(
            "spec.jobTemplate.spec.template.spec.restartPolicy",
            restart,
            &["OnFailure", "Never"],
        ));
    }
    causes
}
