//! gateway: imgforge's reverse proxy (the library behind the binary, so fuzz targets reach
//! the parser and the router), the proxy role's front door. It replaces Apache's
//! reverse proxy, certbot and the Django proxy views of the user's setup (../shared/seeds):
//! routing by host and path prefix, prefix stripping with X-Forwarded-Prefix, WebSockets,
//! per-route timeouts, access by source network, HTTP Basic and forward auth.
//!
//! `gateway serve --config FILE` runs it; `gateway check FILE` validates a configuration
//! and names the line and key of a mistake. Without --config it answers a page naming the
//! node (what the proxy image runs until its site renders a configuration).

pub mod access_log;
pub mod acme;
pub mod basic_auth;
pub mod failures;
/// The configuration file: its own crate, so imgforge checks what it renders with this
/// parser without depending on the server.
pub use gateway_config as config;
pub mod health;
pub mod login;
pub mod pages;
pub mod path;
pub mod proxy;
pub mod random;
pub mod rewrite;
pub mod router;
pub mod server;
pub mod spent;
pub mod tls;
pub mod watchdog;
