//! The site and what is rendered from it: the site file's format (`schema`, with typed
//! `addr`esses, `names` and `route` values), the checks of the whole site (`check`), each
//! host's nftables ruleset (`firewall`) and the proxy host's gateway.toml (`gateway_toml`).
//!
//! [`SiteView`] is the site's view of the network: each host's address, the local
//! networks, and who may reach which port of which host (from `[[access]]` and from the
//! gateway's routes).

pub mod addr;
pub mod check;
pub mod firewall;
pub mod gateway_toml;
pub mod names;
pub mod route;
pub mod schema;
pub mod ssh_key;
pub mod updates;

use std::net::IpAddr;

use anyhow::{anyhow, bail, Result};

pub use addr::{parse_net, HostAddress, Net};
use route::{Peer, RouteTo};
use schema::{Host, Site, SiteRoute};

/// Who may reach a port: anyone, or these sources.
#[derive(Debug, Clone, PartialEq)]
pub enum Sources {
    Any,
    Nets(Vec<(Net, String)>),
}

pub struct SiteView<'a> {
    pub site: &'a Site,
    /// The site file's name, for messages.
    pub display: &'a str,
    /// Its text, to find the line of a key named in a message.
    pub text: &'a str,
}

impl<'a> SiteView<'a> {
    /// `FILE:LINE:COL: key `KEY`` for a message about `key` (`route[2].to`).
    pub fn at(&self, key: &str) -> String {
        toml_errors::at(self.display, self.text, key)
    }

    /// The host named `name` and its index in the file.
    pub fn find(&self, name: &str) -> Option<(usize, &'a Host)> {
        self.site
            .hosts
            .iter()
            .enumerate()
            .find(|(_, h)| h.name == *name)
    }

    pub fn host_names(&self) -> String {
        let names: Vec<_> = self.site.hosts.iter().map(|h| h.name.as_str()).collect();
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        }
    }

    /// The host named by `key` (e.g. `route[1].to`), or an error at that key.
    pub fn host_at(&self, name: &str, key: &str) -> Result<&'a Host> {
        self.find(name).map(|(_, h)| h).ok_or_else(|| {
            anyhow!(
                "{}: no host `{name}` in the site; hosts: {}",
                self.at(key),
                self.host_names()
            )
        })
    }

    /// The static address of the host `name` (named at `key`), needed wherever another
    /// host must name it: a firewall rule, a gateway upstream.
    pub fn address_at(&self, name: &str, key: &str, needed_for: &str) -> Result<IpAddr> {
        let h = self.host_at(name, key)?;
        h.address.ip().ok_or_else(|| {
            anyhow!(
                "{}: host `{name}` has address \"dhcp\", but {needed_for} needs its address: give it a static one",
                self.at(key)
            )
        })
    }

    pub fn lan(&self) -> &'a [Net] {
        &self.site.lan
    }

    /// The proxy host serving route `i`: its `via`, else the one host running `proxy_role`.
    pub fn via(&self, i: usize, proxy_role: &str) -> Result<String> {
        let route = &self.site.routes[i];
        if let Some(v) = &route.via {
            self.host_at(v, &format!("route[{i}].via"))?;
            return Ok(v.to_string());
        }
        let proxies: Vec<_> = self
            .site
            .hosts
            .iter()
            .filter(|h| h.role == *proxy_role)
            .collect();
        match proxies.as_slice() {
            [one] => Ok(one.name.to_string()),
            [] => bail!(
                "{}: route `{}`: no host runs the `{proxy_role}` role; add one or set `via`",
                self.at(&format!("route[{i}]")),
                route.label()
            ),
            _ => bail!(
                "{}: route `{}`: several hosts run `{proxy_role}`; say which with `via`",
                self.at(&format!("route[{i}]")),
                route.label()
            ),
        }
    }

    /// A route's `to` as (host, port) when it names a host of the site.
    pub fn route_target(route: &SiteRoute) -> Option<(&str, u16)> {
        match &route.to {
            RouteTo::Host { host, port } => Some((host.as_str(), port.get())),
            RouteTo::Url(_) => None,
        }
    }

    /// Who may reach `port` on `host`: the hosts the site's `[[access]]` names, and the
    /// proxy of every route whose upstream it is.
    pub fn sources(&self, host: &str, port: u16, proxy_role: &str) -> Result<Option<Sources>> {
        let mut nets: Vec<(Net, String)> = Vec::new();
        let mut any = false;
        for (i, a) in self.site.access.iter().enumerate() {
            if a.to != *host || !a.ports.iter().any(|p| p.get() == port) {
                continue;
            }
            for (k, from) in a.from.iter().enumerate() {
                match from {
                    Peer::Any => any = true,
                    Peer::Lan => {
                        if self.lan().is_empty() {
                            bail!(
                                "{}: access to `{host}` from \"lan\", but the site sets no `lan`",
                                self.at(&format!("access[{i}].from[{k}]"))
                            );
                        }
                        nets.extend(self.lan().iter().map(|n| (*n, "lan".to_string())));
                    }
                    Peer::Host(name) => {
                        let addr = self.address_at(
                            name,
                            &format!("access[{i}].from[{k}]"),
                            &format!("the firewall rule letting it reach {host}:{port}"),
                        )?;
                        nets.push((Net::host(addr), name.to_string()));
                    }
                }
            }
        }
        for (i, r) in self.site.routes.iter().enumerate() {
            if Self::route_target(r) == Some((host, port)) {
                let via = self.via(i, proxy_role)?;
                let key = match &r.via {
                    Some(_) => format!("route[{i}].via"),
                    None => format!("route[{i}]"),
                };
                let addr = self.address_at(
                    &via,
                    &key,
                    &format!("the firewall rule letting the proxy reach {host}:{port}"),
                )?;
                nets.push((Net::host(addr), via));
            }
        }
        if any {
            return Ok(Some(Sources::Any));
        }
        nets.sort();
        nets.dedup_by(|a, b| a.0 == b.0);
        Ok((!nets.is_empty()).then_some(Sources::Nets(nets)))
    }

    /// Every `[[access]]` and route port aimed at `host`, with the key that asks for it.
    pub fn ports_asked_of(&self, host: &str) -> Vec<(u16, String, String)> {
        let mut v = Vec::new();
        for (i, a) in self.site.access.iter().enumerate() {
            if a.to == *host {
                for (k, p) in a.ports.iter().enumerate() {
                    v.push((
                        p.get(),
                        format!("access[{i}].ports[{k}]"),
                        format!("[[access]] to `{host}`"),
                    ));
                }
            }
        }
        for (i, r) in self.site.routes.iter().enumerate() {
            if let Some((h, p)) = Self::route_target(r) {
                if h == host {
                    v.push((
                        p,
                        format!("route[{i}].to"),
                        format!("route `{}`", r.label()),
                    ));
                }
            }
        }
        v
    }
}
