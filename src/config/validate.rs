//! Checks that span sections: unique names, references that resolve,
//! addresses that do not collide, and the admin-token rule.
//!
//! They run even when decoding found problems, on what did decode, so one
//! run reports everything. They avoid follow-on errors: a list item that
//! failed to decode was left out, so paths are mapped back to the file's
//! indices ([`Cx::source_index`]) and the upstream names a route may refer
//! to are read from the file itself; the loader also drops an issue here
//! when decoding already reported one at the same path.

use std::collections::HashSet;

use super::decode::Cx;
use super::yaml::{Node, Value};
use super::Config;

/// Adds an issue to `cx` for every cross-section problem in `config`.
/// `tree` is the parsed file: lines, and what failed to decode.
pub fn validate(config: &Config, tree: &Node, cx: &mut Cx) {
    let line = |path: &str| line_of(tree, path);

    let mut upstream_names = HashSet::new();
    for (index, upstream) in config.upstreams.iter().enumerate() {
        if !upstream_names.insert(upstream.name.as_str()) {
            let path = format!("upstreams[{}].name", cx.source_index("upstreams", index));
            cx.error_at(
                &path,
                line(&path),
                format!("duplicate upstream name {:?}", upstream.name),
            );
        }
    }
    // Every name written, decoded or not; `None` when `upstreams` is not a
    // list at all (that is its own error).
    let defined: Option<Vec<&str>> = match tree.get("upstreams").map(|node| &node.value) {
        Some(Value::Seq(items)) => Some(
            items
                .iter()
                .filter_map(|item| match item.get("name").map(|name| &name.value) {
                    Some(Value::Scalar { text, .. }) => Some(text.as_str()),
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    };
    // The built-in `original-dst` upstream is not in the file but defined.
    let is_defined = |name: &str| {
        defined.as_ref().is_none_or(|names| names.contains(&name))
            || config.upstream(name).is_some()
    };

    let mut listener_names = HashSet::new();
    let mut addresses = HashSet::new();
    let mut route_names = HashSet::new();
    for (l, listener) in config.listeners.iter().enumerate() {
        let listener_path = format!("listeners[{}]", cx.source_index("listeners", l));
        if !listener_names.insert(listener.name.as_str()) {
            let path = format!("{listener_path}.name");
            cx.error_at(
                &path,
                line(&path),
                format!("duplicate listener name {:?}", listener.name),
            );
        }
        if !addresses.insert(listener.listen) || listener.listen == config.admin.listen {
            let path = format!("{listener_path}.listen");
            cx.error_at(
                &path,
                line(&path),
                format!(
                    "address {} is already used by another listener or the admin port",
                    listener.listen
                ),
            );
        }
        let routes_path = format!("{listener_path}.routes");
        for (r, route) in listener.routes.iter().enumerate() {
            let route_path = format!("{routes_path}[{}]", cx.source_index(&routes_path, r));
            if !route_names.insert(route.name.as_str()) {
                let path = format!("{route_path}.name");
                cx.error_at(
                    &path,
                    line(&path),
                    format!(
                        "duplicate route name {:?}; route names are unique across listeners",
                        route.name
                    ),
                );
            }
            let path = format!("{route_path}.upstream");
            if route.upstream.is_none() {
                cx.error_at(
                    &path,
                    line(&route_path),
                    "required key is missing (only routes on a transparent listener may leave it out)",
                );
                continue;
            }
            let original_dst = config
                .upstream(route.upstream())
                .is_some_and(|upstream| upstream.original_dst.is_some());
            if !listener.transparent && original_dst {
                cx.error_at(
                    &path,
                    line(&path),
                    format!(
                        "upstream {:?} forwards to the original destination, which only a listener with `transparent: true` has",
                        route.upstream()
                    ),
                );
            }
            if !is_defined(route.upstream()) {
                let known = defined.as_deref().unwrap_or_default().join(", ");
                cx.error_at(
                    &path,
                    line(&path),
                    format!("no upstream named {:?}; defined: {known}", route.upstream()),
                );
            }
        }
    }

    if let Some(name) = &config.supervisor.upstream {
        if !is_defined(name) {
            cx.error_at(
                "supervisor.upstream",
                line("supervisor.upstream"),
                format!("no upstream named {name:?}"),
            );
        }
    } else if config.supervisor.process.is_some()
        && defined.as_ref().map_or(config.upstreams.len(), Vec::len) != 1
    {
        cx.error_at(
            "supervisor.upstream",
            line("supervisor.process"),
            "with several upstreams, name the one the process serves",
        );
    }

    // A token that was written but failed is reported where it was written.
    let admin = tree.get("admin");
    let token_written = admin.is_some_and(|admin| {
        admin.key_line("token").is_some() || admin.key_line("token_env").is_some()
    });
    if !config.admin.listen.ip().is_loopback() && config.admin.token.is_none() && !token_written {
        cx.error_at(
            "admin.listen",
            line("admin.listen"),
            format!("admin address {} is not loopback: set admin.token or admin.token_env so mutations need a token", config.admin.listen),
        );
    }
}

/// Line of the key at `path` (`a.b[2].c`) in `tree`, if it is there.
pub fn line_of(tree: &Node, path: &str) -> Option<usize> {
    let mut node = tree;
    let mut line = None;
    for part in path.split('.') {
        let (key, indexes) = match part.find('[') {
            Some(at) => (&part[..at], &part[at..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            line = Some(node.key_line(key)?);
            node = node.get(key)?;
        }
        for index in indexes.split(['[', ']']).filter(|s| !s.is_empty()) {
            let index: usize = index.parse().ok()?;
            let Value::Seq(items) = &node.value else {
                return line;
            };
            node = items.get(index)?;
            line = Some(node.line);
        }
    }
    line
}
