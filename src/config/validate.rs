//! Checks that span sections: unique names, references that resolve,
//! addresses that do not collide, and the admin-token rule.

use std::collections::HashSet;

use super::decode::Cx;
use super::yaml::{Node, Value};
use super::Config;

/// Adds an issue to `cx` for every cross-section problem in `config`.
/// `tree` is the parsed file, used only to find line numbers.
pub fn validate(config: &Config, tree: &Node, cx: &mut Cx) {
    let line = |path: &str| line_of(tree, path);

    let mut upstream_names = HashSet::new();
    for (index, upstream) in config.upstreams.iter().enumerate() {
        if !upstream_names.insert(upstream.name.as_str()) {
            let path = format!("upstreams[{index}].name");
            cx.error_at(
                &path,
                line(&path),
                format!("duplicate upstream name {:?}", upstream.name),
            );
        }
    }

    let mut listener_names = HashSet::new();
    let mut addresses = HashSet::new();
    let mut route_names = HashSet::new();
    for (l, listener) in config.listeners.iter().enumerate() {
        if !listener_names.insert(listener.name.as_str()) {
            let path = format!("listeners[{l}].name");
            cx.error_at(
                &path,
                line(&path),
                format!("duplicate listener name {:?}", listener.name),
            );
        }
        if !addresses.insert(listener.listen) || listener.listen == config.admin.listen {
            let path = format!("listeners[{l}].listen");
            cx.error_at(
                &path,
                line(&path),
                format!(
                    "address {} is already used by another listener or the admin port",
                    listener.listen
                ),
            );
        }
        for (r, route) in listener.routes.iter().enumerate() {
            if !route_names.insert(route.name.as_str()) {
                let path = format!("listeners[{l}].routes[{r}].name");
                cx.error_at(
                    &path,
                    line(&path),
                    format!(
                        "duplicate route name {:?}; route names are unique across listeners",
                        route.name
                    ),
                );
            }
            if !upstream_names.contains(route.upstream.as_str()) {
                let path = format!("listeners[{l}].routes[{r}].upstream");
                let known: Vec<&str> = config.upstreams.iter().map(|u| u.name.as_str()).collect();
                cx.error_at(
                    &path,
                    line(&path),
                    format!(
                        "no upstream named {:?}; defined: {}",
                        route.upstream,
                        known.join(", ")
                    ),
                );
            }
        }
    }

    if let Some(name) = &config.supervisor.upstream {
        if !upstream_names.contains(name.as_str()) {
            cx.error_at(
                "supervisor.upstream",
                line("supervisor.upstream"),
                format!("no upstream named {name:?}"),
            );
        }
    } else if config.supervisor.process.is_some() && config.upstreams.len() != 1 {
        cx.error_at(
            "supervisor.upstream",
            line("supervisor.process"),
            "with several upstreams, name the one the process serves",
        );
    }

    if !config.admin.listen.ip().is_loopback() && config.admin.token.is_none() {
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
            let Value::Map(entries) = &node.value else {
                return line;
            };
            let (key_node, value) = entries
                .iter()
                .find(|(k, _)| matches!(&k.value, Value::Scalar { text, .. } if text == key))?;
            line = Some(key_node.line);
            node = value;
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
