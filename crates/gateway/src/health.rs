//! Active health checks: every `health-interval-secs`, a GET of each route's `health` path
//! on its upstream. A route whose upstream fails its check is answered at once with the 502
//! page naming it, instead of every client waiting for a connect timeout; each change of
//! state is logged once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use hyper::Request;

use crate::proxy::Runtime;

/// One flag per route: healthy until a check says otherwise.
pub struct Health(Vec<AtomicBool>);

impl Health {
    pub fn new(routes: usize) -> Health {
        Health((0..routes).map(|_| AtomicBool::new(true)).collect())
    }

    pub fn is_up(&self, route: usize) -> bool {
        self.0[route].load(Ordering::Relaxed)
    }
}

/// Checks the routes of `rt` until that configuration is replaced (the task holds it weakly).
pub async fn watch(rt: Weak<Runtime>, interval: Duration) {
    loop {
        let Some(r) = rt.upgrade() else { return };
        for (i, route) in r.cfg.routes.iter().enumerate() {
            let Some(path) = &route.health else { continue };
            let uri = format!(
                "http://{}{}{}",
                route.upstream.authority, route.upstream.path, path
            );
            let req = Request::get(&uri)
                .header("user-agent", "gateway-health")
                .body(crate::proxy::no_body())
                .expect("valid");
            let verdict = match tokio::time::timeout(
                Duration::from_secs(2),
                r.client(i).request(req),
            )
            .await
            {
                Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
                Ok(Ok(resp)) => Err(format!("answered {}", resp.status().as_u16())),
                Ok(Err(_)) => Err("not answering".to_string()),
                Err(_) => Err("no answer within 2 s".to_string()),
            };
            let up = verdict.is_ok();
            if r.health.0[i].swap(up, Ordering::Relaxed) != up {
                match verdict {
                    Ok(()) => println!(
                        "health: route {i} upstream {} is up again",
                        route.upstream.authority
                    ),
                    Err(why) => println!(
                        "health: route {i} upstream {} is down: {uri} {why}",
                        route.upstream.authority
                    ),
                }
            }
        }
        drop(r);
        tokio::time::sleep(interval).await;
    }
}

pub fn spawn(rt: &Arc<Runtime>) {
    if rt.cfg.routes.iter().any(|r| r.health.is_some()) {
        tokio::spawn(watch(
            Arc::downgrade(rt),
            Duration::from_secs(rt.cfg.server.health_interval_secs.max(1)),
        ));
    }
}
