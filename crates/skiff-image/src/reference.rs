//! Image references as users write them and as containerd stores them.
//!
//! A Kubernetes pod says `image: web:1.0`; the kubelet hands that to the runtime, which
//! expands it the way Docker always has: `docker.io/library/web:1.0`. containerd stores images
//! under the expanded name only, so every lookup must normalise first — otherwise `web:1.0`
//! and `docker.io/library/web:1.0` would be two different images.
//!
//! The rules (Docker's `ParseNormalizedNamed` + `TagNameOnly`):
//!
//! | written                       | normalised                              | why                           |
//! |-------------------------------|-----------------------------------------|-------------------------------|
//! | `busybox`                     | `docker.io/library/busybox:latest`      | no domain, no tag             |
//! | `web:1.0`                     | `docker.io/library/web:1.0`             | official images are `library/`|
//! | `me/web`                      | `docker.io/me/web:latest`               | a user's image on Docker Hub  |
//! | `skiff.local/web:1.0`         | `skiff.local/web:1.0`                   | `.` makes the first part a domain |
//! | `localhost:5000/web`          | `localhost:5000/web:latest`             | `:` (a port) too, or `localhost` |
//! | `web@sha256:…`                | `docker.io/library/web@sha256:…`        | a digest needs no tag         |
//!
//! skiff's own images are named under `skiff.local/` so they never pretend to come from
//! Docker Hub.
use crate::{Error, Result};

/// The registry Docker assumes when a reference names none.
const DEFAULT_DOMAIN: &str = "docker.io";
/// Where Docker Hub keeps official images (`busybox` is `library/busybox`).
const OFFICIAL_REPO_PREFIX: &str = "library/";
/// The tag Docker assumes when a reference names neither a tag nor a digest.
const DEFAULT_TAG: &str = "latest";

/// Expands an image reference to the full name containerd stores it under.
///
/// ```
/// assert_eq!(skiff_image::normalize("web:1.0").expect("valid reference"), "docker.io/library/web:1.0");
/// assert_eq!(skiff_image::normalize("skiff.local/web").expect("valid reference"), "skiff.local/web:latest");
/// ```
pub fn normalize(reference: &str) -> Result<String> {
    let invalid = |reason| Error::InvalidReference {
        reference: reference.to_string(),
        reason,
    };
    if reference.is_empty() {
        return Err(invalid("empty"));
    }

    // name[:tag][@digest] — the digest is split off first because it contains a ':'.
    let (name_and_tag, digest) = match reference.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (reference, None),
    };
    // A ':' after the last '/' starts the tag; one before it is a registry port.
    let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_and_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_and_tag[..last_slash + i],
            Some(&name_and_tag[last_slash + i + 1..]),
        ),
        None => (name_and_tag, None),
    };

    let (domain, path) = split_domain(name);
    if !domain.is_empty() && !valid_domain(domain) {
        return Err(invalid("invalid registry host"));
    }
    if path.is_empty() || !path.split('/').all(valid_path_component) {
        return Err(invalid(
            "repository path components must be lowercase letters, digits and . _ - separators",
        ));
    }
    if let Some(tag) = tag {
        if !valid_tag(tag) {
            return Err(invalid(
                "tags are 1-128 of [A-Za-z0-9_.-], not starting with . or -",
            ));
        }
    }
    if let Some(digest) = digest {
        if !valid_digest(digest) {
            return Err(invalid("digests look like sha256:<64 hex digits>"));
        }
    }

    let domain = match domain {
        "" | "index.docker.io" => DEFAULT_DOMAIN,
        other => other,
    };
    // Docker Hub's one-component names are its official images: `busybox` = `library/busybox`.
    let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
        format!("{OFFICIAL_REPO_PREFIX}{path}")
    } else {
        path.to_string()
    };

    let mut normalized = format!("{domain}/{path}");
    match (tag, digest) {
        (None, None) => normalized.push_str(&format!(":{DEFAULT_TAG}")),
        (Some(tag), _) => normalized.push_str(&format!(":{tag}")),
        (None, Some(_)) => {}
    }
    if let Some(digest) = digest {
        normalized.push_str(&format!("@{digest}"));
    }
    Ok(normalized)
}

/// Splits `registry/path` into its registry ("" when none is named) and repository path.
///
/// The first component is a registry only if it could not be a Docker Hub user: it has a `.`
/// (a host name), a `:` (a port), is `localhost`, or has upper case (repositories cannot).
fn split_domain(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => ("", name),
    }
}

/// `host[:port]`: letters, digits, `.` and `-`, then an optional numeric port.
fn valid_domain(domain: &str) -> bool {
    let (host, port) = match domain.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    let host_ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    host_ok && port_ok
}

/// One `/`-separated part of a repository path: lowercase alphanumerics joined by `.`, `_`,
/// `__` or runs of `-`; it starts and ends with an alphanumeric.
fn valid_path_component(component: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let bytes: Vec<char> = component.chars().collect();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    alnum(first)
        && alnum(last)
        && bytes
            .iter()
            .all(|&c| alnum(c) || c == '.' || c == '_' || c == '-')
        && !component.contains("..")
        && !component.contains("___")
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn valid_tag(tag: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    tag.len() <= 128
        && tag.chars().next().is_some_and(word)
        && tag.chars().all(|c| word(c) || c == '.' || c == '-')
}

/// `sha256:` followed by 64 lowercase hex digits (the only algorithm skiff produces or checks).
fn valid_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_docker() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let cases = [
            ("busybox", "docker.io/library/busybox:latest".to_string()),
            ("web:1.0", "docker.io/library/web:1.0".to_string()),
            ("me/web", "docker.io/me/web:latest".to_string()),
            ("docker.io/web:2", "docker.io/library/web:2".to_string()),
            ("index.docker.io/me/web:2", "docker.io/me/web:2".to_string()),
            ("skiff.local/web:1.0", "skiff.local/web:1.0".to_string()),
            (
                "skiff.local/team/web",
                "skiff.local/team/web:latest".to_string(),
            ),
            ("localhost/web", "localhost/web:latest".to_string()),
            ("localhost:5000/web:v1", "localhost:5000/web:v1".to_string()),
            (
                &*format!("web@{digest}"),
                format!("docker.io/library/web@{digest}"),
            ),
            (
                &*format!("web:1@{digest}"),
                format!("docker.io/library/web:1@{digest}"),
            ),
        ];
        for (written, want) in cases {
            assert_eq!(
                normalize(written).expect("valid reference"),
                want,
                "normalize({written:?})"
            );
        }
    }

    #[test]
    fn normalizing_is_idempotent() {
        for written in [
            "busybox",
            "me/web:2",
            "skiff.local/web:1.0",
            "localhost:5000/a/b",
        ] {
            let once = normalize(written).expect("valid reference");
            assert_eq!(normalize(&once).expect("valid reference"), once);
        }
    }

    #[test]
    fn rejects_what_docker_rejects() {
        for bad in [
            "",
            "Web:1.0",
            "web:",
            "web:-x",
            "web@sha256:abc",
            "/web",
            "web/",
            "a//b",
            "web space",
            "skiff.local/",
            "-web",
        ] {
            assert!(
                matches!(normalize(bad), Err(Error::InvalidReference { .. })),
                "{bad:?} should be rejected"
            );
        }
    }
}
