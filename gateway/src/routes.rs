//! Host + path-prefix routing, precomputed at bind: one hash lookup per request, then the
//! longest matching prefix among that host's apps (`gatehouse_core::config::route`).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use gatehouse_core::config::{AppConfig, route};
use http::uri::Authority;

/// An app as the request path needs it.
#[derive(Debug)]
pub struct App {
    pub name: Arc<str>,
    pub upstream: Authority,
    /// Origins besides the app's own whose pages may open WebSockets to it (lowercase,
    /// `scheme://host[:port]`).
    pub allowed_origins: Box<[String]>,
}

#[derive(Debug, Default)]
struct HostApps {
    configs: Vec<AppConfig>,
    apps: Vec<Arc<App>>,
}

#[derive(Debug, Default)]
pub struct Routes {
    by_host: HashMap<String, HostApps>,
}

#[derive(Debug, thiserror::Error)]
#[error("app `{app}`: upstream `{authority}` is not a valid host:port")]
pub struct RouteError {
    pub app: String,
    pub authority: String,
    #[source]
    pub source: http::uri::InvalidUri,
}

impl Routes {
    pub fn new(apps: &[AppConfig]) -> Result<Routes, RouteError> {
        let mut by_host: HashMap<String, HostApps> = HashMap::new();
        for a in apps {
            let upstream =
                Authority::from_str(&a.upstream.authority).map_err(|source| RouteError {
                    app: a.name.clone(),
                    authority: a.upstream.authority.clone(),
                    source,
                })?;
            let entry = by_host.entry(a.host.to_ascii_lowercase()).or_default();
            entry.configs.push(a.clone());
            entry.apps.push(Arc::new(App {
                name: Arc::from(a.name.as_str()),
                upstream,
                allowed_origins: a.allowed_origins.clone().into_boxed_slice(),
            }));
        }
        Ok(Routes { by_host })
    }

    /// The app for a lowercase, port-less host and a normalised path.
    pub fn route(&self, host: &str, path: &str) -> Option<&Arc<App>> {
        let h = self.by_host.get(host)?;
        let chosen = route(&h.configs, host, path)?;
        let i = h.configs.iter().position(|c| std::ptr::eq(c, chosen))?;
        h.apps.get(i)
    }
}

#[cfg(test)]
mod tests {
    use gatehouse_core::config::Upstream;

    use super::*;

    fn app(name: &str, host: &str, prefix: Option<&str>) -> AppConfig {
        AppConfig {
            name: name.into(),
            host: host.into(),
            path_prefix: prefix.map(Into::into),
            upstream: Upstream {
                authority: "127.0.0.1:9".into(),
            },
            allowed_origins: Vec::new(),
        }
    }

    #[test]
    fn longest_prefix_per_host() {
        let r = Routes::new(&[
            app("wiki", "wiki.example", None),
            app("wiki-admin", "wiki.example", Some("/admin")),
            app("other", "other.example", None),
        ])
        .unwrap();
        let name = |h: &str, p: &str| r.route(h, p).map(|a| a.name.to_string());
        assert_eq!(name("wiki.example", "/"), Some("wiki".into()));
        assert_eq!(name("wiki.example", "/admin"), Some("wiki-admin".into()));
        assert_eq!(name("wiki.example", "/admin/x"), Some("wiki-admin".into()));
        assert_eq!(name("wiki.example", "/administrator"), Some("wiki".into()));
        assert_eq!(name("other.example", "/admin"), Some("other".into()));
        assert_eq!(name("nope.example", "/"), None);
    }
}
