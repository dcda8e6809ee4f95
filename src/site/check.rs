//! Checks of the whole site, not only the host being built: a mistake about any host, route
//! or access rule stops every build from the site, with the file, line and key. What one
//! value can say about itself (an address that does not parse, a prefix without its
//! slashes) is refused earlier, when the file is read (see `schema`).

use std::collections::BTreeMap;

use anyhow::{bail, Result};

use super::firewall::PROXY_ROLE;
use super::gateway_toml::{gateway_service, render};
use super::route::{Peer, RouteAccess, RouteTo};
use super::SiteView;
use crate::profile::Layer;

/// `roles` holds, for each role a host runs, its services and slots (common.toml and the
/// role's file merged; a target adds no services).
pub fn check(view: &SiteView, roles: &BTreeMap<String, Layer>) -> Result<()> {
    let site = view.site;
    let line_of = |key: &str| {
        toml_errors::position(view.text, key).map_or(String::new(), |(l, _)| format!(" (line {l})"))
    };
    for (i, h) in site.hosts.iter().enumerate() {
        if let Some(j) = site.hosts[..i].iter().position(|o| o.name == h.name) {
            bail!(
                "{}: a second host named `{}`: host[{j}]{} has the name already",
                view.at(&format!("host[{i}].name")),
                h.name,
                line_of(&format!("host[{j}].name"))
            );
        }
        let Some(net) = h.address.net() else {
            continue;
        };
        if let Some(j) = site.hosts[..i]
            .iter()
            .position(|o| o.address.ip() == Some(net.addr))
        {
            bail!(
                "{}: host `{}` has the address {} of host `{}`{}",
                view.at(&format!("host[{i}].address")),
                h.name,
                net.addr,
                site.hosts[j].name,
                line_of(&format!("host[{j}].address"))
            );
        }
        if !site.lan.is_empty() && !site.lan.iter().any(|l| l.contains(net.addr)) {
            let lan: Vec<String> = site.lan.iter().map(|n| n.to_string()).collect();
            bail!(
                "{}: host `{}`: {} is outside every network of `lan` ({}); fix the address or add its network to `lan`",
                view.at(&format!("host[{i}].address")),
                h.name,
                net.addr,
                lan.join(", ")
            );
        }
        if let Some(gw) = h.gateway {
            if !net.contains(gw) {
                bail!(
                    "{}: host `{}`: gateway {gw} is outside its network {}/{}",
                    view.at(&format!("host[{i}].gateway")),
                    h.name,
                    net.addr,
                    net.prefix
                );
            }
        }
    }
    for (i, h) in site.hosts.iter().enumerate() {
        let Some(role) = roles.get(h.role.as_str()) else {
            bail!(
                "{}: host `{}`: no role `{}`",
                view.at(&format!("host[{i}].role")),
                h.name,
                h.role
            );
        };
        for name in h.apps.keys() {
            if !role.apps.iter().any(|a| &a.name == name) {
                let slots: Vec<&str> = role.apps.iter().map(|a| a.name.as_str()).collect();
                bail!(
                    "{}: host `{}`: role `{}` has no app slot `{name}` (its app slots: {})",
                    view.at(&format!("host[{i}].apps.{name}")),
                    h.name,
                    h.role,
                    if slots.is_empty() {
                        "none".into()
                    } else {
                        slots.join(", ")
                    }
                );
            }
        }
        for app in &role.apps {
            if !h.apps.contains_key(&app.name) {
                bail!(
                    "{}: role `{}` has the app slot `{}`: host `{}` must name its source (apps = {{ {} = \"path/to/app\" }})",
                    view.at(&format!("host[{i}]")),
                    h.role,
                    app.name,
                    h.name,
                    app.name
                );
            }
        }
    }
    // The ports each host's role serves.
    let serves = |host: &str, port: u16, key: &str, what: &str| -> Result<()> {
        let Some((_, h)) = view.find(host) else {
            return Ok(());
        };
        let role = &roles[h.role.as_str()];
        let mut ports: Vec<u16> = role
            .services
            .iter()
            .flat_map(|s| s.ports.iter().map(|p| p.get()))
            .collect();
        if ports.contains(&port) {
            return Ok(());
        }
        ports.sort();
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        bail!(
            "{}: {what} reaches port {port} of `{host}`, but no service of role `{}` listens on it (it serves: {})",
            view.at(key),
            h.role,
            if ports.is_empty() { "no port".into() } else { ports.join(", ") }
        )
    };
    for (i, a) in site.access.iter().enumerate() {
        view.host_at(&a.to, &format!("access[{i}].to"))?;
        for (k, p) in a.ports.iter().enumerate() {
            serves(
                &a.to,
                p.get(),
                &format!("access[{i}].ports[{k}]"),
                &format!("[[access]] to `{}`", a.to),
            )?;
        }
        for (k, from) in a.from.iter().enumerate() {
            let key = format!("access[{i}].from[{k}]");
            match from {
                Peer::Any => {}
                Peer::Lan if site.lan.is_empty() => bail!(
                    "{}: access to `{}` from \"lan\", but the site sets no `lan`",
                    view.at(&key),
                    a.to
                ),
                Peer::Lan => {}
                Peer::Host(name) => {
                    view.address_at(
                        name,
                        &key,
                        &format!("the firewall rule letting it reach `{}`", a.to),
                    )?;
                }
            }
        }
    }
    for (i, r) in site.routes.iter().enumerate() {
        if let Some(j) = site.routes[..i]
            .iter()
            .position(|o| o.domain == r.domain && o.prefix == r.prefix)
        {
            bail!(
                "{}: route `{}` again: route[{j}]{} has the same domain and prefix",
                view.at(&format!("route[{i}]")),
                r.label(),
                line_of(&format!("route[{j}]"))
            );
        }
        // `access = "lan"` with a public path covering the whole prefix would make the
        // route public: refused here at the site's own line (the gateway's parser refuses
        // it too, but at the rendered file's).
        if r.access == RouteAccess::Lan {
            if let Some((k, p)) = r
                .public_paths
                .iter()
                .enumerate()
                .find(|(_, p)| r.prefix.as_str().starts_with(p.as_str()))
            {
                bail!(
                    "{}: route `{}`: public path `{p}` covers the whole route (prefix `{}`), which `access = \"lan\"` keeps to the LAN: name the public part under the prefix, or set access = \"any\"",
                    view.at(&format!("route[{i}].public-paths[{k}]")),
                    r.label(),
                    r.prefix
                );
            }
        }
        if let RouteTo::Host { host, port } = &r.to {
            let key = format!("route[{i}].to");
            view.address_at(host, &key, &format!("the gateway's route `{}`", r.label()))?;
            serves(host, port.get(), &key, &format!("route `{}`", r.label()))?;
        }
        let via = view.via(i, PROXY_ROLE)?;
        let (_, vh) = view.find(&via).expect("via names a host");
        if let RouteTo::Host { host, port } = &r.to {
            let key = match &r.via {
                Some(_) => format!("route[{i}].via"),
                None => format!("route[{i}]"),
            };
            view.address_at(
                &via,
                &key,
                &format!("the firewall rule letting the proxy reach {host}:{port}"),
            )?;
        }
        if gateway_service(&roles[vh.role.as_str()].services).is_none() {
            bail!(
                "{}: route `{}` is served by host `{via}`, whose role `{}` runs no gateway",
                view.at(&format!("route[{i}].via")),
                r.label(),
                vh.role
            );
        }
    }
    // Each proxy host's gateway.toml, rendered and run through the gateway's own parser.
    for h in &site.hosts {
        let role = &roles[h.role.as_str()];
        if let Some(gw) = gateway_service(&role.services) {
            render(view, &h.name, &gw.name, &role.slots)?;
        }
    }
    Ok(())
}
