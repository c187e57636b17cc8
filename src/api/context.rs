//! `Ctx`: what a route's handler gets: the shard, the request, its path parameters, its query and
//! who is asking.

use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::api::error::ApiError;
use crate::api::query::Query;
use crate::backup::OneAtATime;
use crate::fleet::accounts::Principal;
use crate::http::request::Request;
use crate::shard::local::Local;

pub struct Ctx<'a> {
    pub local: &'a Rc<Local>,
    pub req: &'a Request,
    /// The client: the peer, or whom a trusted proxy named (`X-Forwarded-For` has no port: 0).
    pub remote: SocketAddr,
    pub query: Query,
    /// The path's parameters by name: the segments its route leaves open (a device id, a serial).
    pub params: Vec<(&'static str, &'a str)>,
    /// Who is asking; `None` on the routes that need no authentication.
    pub principal: Option<Principal>,
    /// `--data-dir`: the initial admin password's file is removed there once it is changed.
    pub data_dir: &'a Path,
    /// Renders `/metrics`.
    pub prometheus: &'a PrometheusHandle,
    /// Lets one backup run at a time.
    pub backups: &'a OneAtATime,
}

impl<'a> Ctx<'a> {
    /// The path parameter `name`. Every handler reads only parameters its route has, so the empty
    /// fallback never reaches a client.
    pub fn param(&self, name: &str) -> &'a str {
        let value = self.params.iter().find(|(n, _)| *n == name);
        debug_assert!(value.is_some(), "the route has no parameter {name}");
        value.map_or("", |(_, v)| v)
    }

    /// The authenticated caller. Only routes that need authentication read it, and those run
    /// only with one; the 401 is the answer should a table entry ever break that.
    pub fn principal(&self) -> Result<&Principal, ApiError> {
        self.principal.as_ref().ok_or_else(ApiError::unauthorized)
    }
}
