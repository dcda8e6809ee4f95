//! The site file's format (`profiles/sites/*.toml`): the hosts of one deployment, the role
//! each runs, who reaches what, and the gateway's routes. Every value is typed (see
//! `addr`, `names`, `route`), so a bad one is refused with its line and key when the file
//! is read; what needs the whole site (a route naming an unknown host) is `check`'s.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::addr::{HostAddress, Net};
use super::names::{DomainName, HostName, ProfileName};
use super::route::{Email, HttpsUrl, PathPrefix, Peer, RouteAccess, RouteAuth, RouteTo, UrlPath};
use crate::profile::unit_values::Port;

/// A site: the hosts of one deployment and the role each runs.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Site {
    /// The site's DNS domain; hostnames are `<host>.<domain>`.
    pub domain: DomainName,
    /// The local networks (ADDRESS/PREFIX): ssh is open to them, and `from = ["lan"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lan: Vec<Net>,
    #[serde(default, rename = "host")]
    pub hosts: Vec<Host>,
    /// Who reaches which port of which host, beyond the routes (which open their
    /// upstream's port to the proxy by themselves).
    #[serde(default, rename = "access", skip_serializing_if = "Vec::is_empty")]
    pub access: Vec<Access>,
    /// The gateway's routes: a public name (and path prefix) to a host's port.
    #[serde(default, rename = "route", skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<SiteRoute>,
    /// How the gateway gets certificates for the routes' names.
    pub tls: Option<SiteTls>,
    /// OpenSSH public keys (the .pub file's line) that may log in as root on every host:
    /// how a person, and `imgforge update --host`, reach a node. Public, so in the image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admin_ssh_keys: Vec<super::ssh_key::SshPublicKey>,
}

/// Hosts allowed to reach ports of another host.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Access {
    /// The host reached.
    pub to: HostName,
    pub ports: Vec<Port>,
    /// Host names of the site, `lan` (the site's networks) or `any`.
    pub from: Vec<Peer>,
}

/// One route of the gateway, rendered into the proxy host's configuration.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SiteRoute {
    /// The public name it answers.
    pub domain: DomainName,
    #[serde(default)]
    pub prefix: PathPrefix,
    /// `HOST:PORT` of the site (the port is opened to the proxy) or `URL` of an outside upstream.
    pub to: RouteTo,
    /// Pass the prefix on to the app instead of stripping it.
    #[serde(default)]
    pub keep_prefix: bool,
    /// `any` (default) or `lan`.
    #[serde(default)]
    pub access: RouteAccess,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public_paths: Vec<UrlPath>,
    /// `basic` (htpasswd lines from the proxy role's slot `htpasswd-slot`) or `login`
    /// (password + TOTP page; users from the proxy role's slot `login-users`).
    pub auth: Option<RouteAuth>,
    pub htpasswd_slot: Option<String>,
    pub connect_timeout_secs: Option<u64>,
    pub read_timeout_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    /// A path of the upstream the gateway polls; a failing upstream is answered 502 at once.
    pub health: Option<UrlPath>,
    /// The proxy host serving it (default: the one host whose role runs the gateway).
    pub via: Option<HostName>,
}

impl SiteRoute {
    /// `jupyter.example.test/`, as messages name a route.
    pub fn label(&self) -> String {
        format!("{}{}", self.domain, self.prefix)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SiteTls {
    /// ACME directory URL (Let's Encrypt's, or a staging or private CA's).
    pub acme_directory: HttpsUrl,
    pub acme_email: Option<Email>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Host {
    /// Short hostname.
    pub name: HostName,
    /// Role this host runs (a file in roles/).
    pub role: ProfileName,
    /// `dhcp` or a static address with prefix, e.g. `192.168.50.2/24`.
    #[serde(default)]
    pub address: HostAddress,
    /// Default gateway for a static address.
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<IpAddr>,
    /// The source of each app slot of its role: a folder or a .tar/.tar.gz, relative to
    /// the site file.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub apps: BTreeMap<String, String>,
    /// Where and when the node takes new versions (systemd-sysupdate on a VM, the worker's
    /// card-update on a Raspberry Pi card):
    /// `updates = { url = "https://...", on-calendar = "daily" }`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updates: Option<super::updates::HostUpdates>,
    /// The storage a Raspberry Pi host's root lives on (`sd`, `nvme`, `usb`), when it is not
    /// the target's default: the card's initramfs drivers follow it. One target serves every
    /// Pi 5, whether its root is the SD card or an NVMe drive; the site knows which host has which.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_device: Option<crate::profile::machine::RootDevice>,
}
