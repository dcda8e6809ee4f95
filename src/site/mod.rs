//! The site's view of the network: each host's address, the local networks, and who may
//! reach which port of which host (from `[[access]]` and from the gateway's routes). The
//! firewall and the gateway's configuration are both rendered from this.

use std::net::IpAddr;

use anyhow::{anyhow, bail, Result};

use crate::profile::schema::{Host, Site, SiteRoute};

/// A network or single address in nftables and gateway syntax (`192.168.50.0/24`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Net {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let full = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.prefix == full {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

/// Parses `ADDRESS/PREFIX` (or a bare address, a /32 or /128).
pub fn parse_net(s: &str) -> Option<Net> {
    let (a, p) = s.split_once('/').unwrap_or((s, ""));
    let addr: IpAddr = a.parse().ok()?;
    let full = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = if p.is_empty() { full } else { p.parse().ok()? };
    (prefix <= full).then_some(Net { addr, prefix })
}

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
}

impl<'a> SiteView<'a> {
    pub fn host(&self, name: &str) -> Result<&'a Host> {
        self.site
            .hosts
            .iter()
            .find(|h| h.name == name)
            .ok_or_else(|| {
                let names: Vec<_> = self.site.hosts.iter().map(|h| h.name.as_str()).collect();
                anyhow!(
                    "{}: no host `{name}`; hosts: {}",
                    self.display,
                    names.join(", ")
                )
            })
    }

    /// The static address of a host (without its prefix), needed wherever another host
    /// must name it: a firewall rule, a gateway upstream.
    pub fn address_of(&self, name: &str, needed_for: &str) -> Result<IpAddr> {
        let h = self.host(name)?;
        if h.address == "dhcp" {
            bail!(
                "{}: host `{name}` has address \"dhcp\", but {needed_for} needs its address: give it a static one",
                self.display
            );
        }
        parse_net(&h.address).map(|n| n.addr).ok_or_else(|| {
            anyhow!(
                "{}: host `{name}`: address `{}` is not ADDRESS/PREFIX",
                self.display,
                h.address
            )
        })
    }

    pub fn lan(&self) -> Result<Vec<Net>> {
        self.site
            .lan
            .iter()
            .map(|s| {
                parse_net(s).ok_or_else(|| {
                    anyhow!("{}: key `lan`: `{s}` is not ADDRESS/PREFIX", self.display)
                })
            })
            .collect()
    }

    /// The proxy host serving a route: its `via`, else the one host running `proxy_role`.
    pub fn via(&self, route: &SiteRoute, proxy_role: &str) -> Result<String> {
        if let Some(v) = &route.via {
            self.host(v)?;
            return Ok(v.clone());
        }
        let proxies: Vec<_> = self
            .site
            .hosts
            .iter()
            .filter(|h| h.role == proxy_role)
            .collect();
        match proxies.as_slice() {
            [one] => Ok(one.name.clone()),
            [] => bail!(
                "{}: route `{}{}`: no host runs the `{proxy_role}` role; add one or set `via`",
                self.display,
                route.domain,
                route.prefix
            ),
            _ => bail!(
                "{}: route `{}{}`: several hosts run `{proxy_role}`; say which with `via`",
                self.display,
                route.domain,
                route.prefix
            ),
        }
    }

    /// A route's `to` as (host, port) when it names a host of the site.
    pub fn route_target(&self, route: &SiteRoute) -> Result<Option<(String, u16)>> {
        if route.to.contains("://") {
            return Ok(None);
        }
        let (h, p) = route.to.rsplit_once(':').ok_or_else(|| {
            anyhow!(
                "{}: route `{}{}`: to = `{}` must be HOST:PORT (a host of the site) or a URL",
                self.display,
                route.domain,
                route.prefix,
                route.to
            )
        })?;
        let port: u16 = p.parse().map_err(|_| {
            anyhow!(
                "{}: route `{}{}`: `{p}` is not a port",
                self.display,
                route.domain,
                route.prefix
            )
        })?;
        self.host(h)?;
        Ok(Some((h.to_string(), port)))
    }

    /// Who may reach `port` on `host`: the hosts the site's `[[access]]` names, and the
    /// proxy of every route whose upstream it is.
    pub fn sources(&self, host: &str, port: u16, proxy_role: &str) -> Result<Option<Sources>> {
        let mut nets: Vec<(Net, String)> = Vec::new();
        let mut any = false;
        for a in self
            .site
            .access
            .iter()
            .filter(|a| a.to == host && a.ports.contains(&port))
        {
            for from in &a.from {
                match from.as_str() {
                    "any" => any = true,
                    "lan" => {
                        let lan = self.lan()?;
                        if lan.is_empty() {
                            bail!(
                                "{}: access to `{host}` from \"lan\", but the site sets no `lan`",
                                self.display
                            );
                        }
                        nets.extend(lan.into_iter().map(|n| (n, "lan".to_string())));
                    }
                    name => {
                        let addr = self.address_of(
                            name,
                            &format!("the firewall rule letting it reach {host}:{port}"),
                        )?;
                        let full = if addr.is_ipv4() { 32 } else { 128 };
                        nets.push((Net { addr, prefix: full }, name.to_string()));
                    }
                }
            }
        }
        for r in &self.site.routes {
            if self.route_target(r)? == Some((host.to_string(), port)) {
                let via = self.via(r, proxy_role)?;
                let addr = self.address_of(
                    &via,
                    &format!("the firewall rule letting the proxy reach {host}:{port}"),
                )?;
                let full = if addr.is_ipv4() { 32 } else { 128 };
                nets.push((Net { addr, prefix: full }, via));
            }
        }
        if any {
            return Ok(Some(Sources::Any));
        }
        nets.sort();
        nets.dedup_by(|a, b| a.0 == b.0);
        Ok((!nets.is_empty()).then_some(Sources::Nets(nets)))
    }

    /// Every `[[access]]` and route port aimed at `host`, to check against what it serves.
    pub fn ports_asked_of(&self, host: &str) -> Result<Vec<(u16, String)>> {
        let mut v = Vec::new();
        for a in self.site.access.iter().filter(|a| a.to == host) {
            for p in &a.ports {
                v.push((*p, format!("[[access]] to `{host}`")));
            }
        }
        for r in &self.site.routes {
            if let Some((h, p)) = self.route_target(r)? {
                if h == host {
                    v.push((p, format!("route `{}{}`", r.domain, r.prefix)));
                }
            }
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nets_parse_and_print() {
        assert_eq!(
            parse_net("192.168.50.0/24").unwrap().to_string(),
            "192.168.50.0/24"
        );
        assert_eq!(
            parse_net("192.168.50.2").unwrap().to_string(),
            "192.168.50.2"
        );
        assert_eq!(parse_net("fd00::1/64").unwrap().to_string(), "fd00::1/64");
        assert!(parse_net("192.168.50.0/33").is_none());
        assert!(parse_net("edge").is_none());
    }
}
