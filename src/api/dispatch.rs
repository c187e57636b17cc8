//! `Api`, the `Handler` the runtime calls for every HTTP request that is not a WebSocket upgrade:
//! finds the route in the table, checks who may call it, runs it.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::api::access;
use crate::api::context::Ctx;
use crate::api::device_http;
use crate::api::error::ApiError;
use crate::api::query::Query;
use crate::api::router::{Access, Lookup, lookup};
use crate::api::routes::ROUTES;
use crate::api::zkteco;
use crate::backup::OneAtATime;
use crate::http::request::Request;
use crate::http::response::Response;
use crate::shard::handler::Reply;
use crate::shard::local::{Handler, Local};

/// The app's HTTP routes, wired into the runtime as its `Handler`.
pub struct Api {
    /// `--data-dir`: the initial admin password's file is removed there once it is changed.
    pub data_dir: PathBuf,
    /// Renders `/metrics`.
    pub prometheus: PrometheusHandle,
    /// Lets one `POST /api/backup` run at a time, whichever shard takes it.
    pub backups: OneAtATime,
}

impl Handler for Api {
    fn route<'a>(
        &'a self,
        local: &'a Rc<Local>,
        req: &'a Request,
        remote: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = Reply> + 'a>> {
        Box::pin(route(self, local, req, remote))
    }
}

fn no_route() -> ApiError {
    ApiError::not_found("no such route")
}

async fn route(api: &Api, local: &Rc<Local>, req: &Request, remote: SocketAddr) -> Reply {
    // ZKTeco ADMS terminals poll under `/iclock/` (names with and without `.aspx`), open like
    // `/api/device-http`: they identify themselves by serial.
    if let Some(endpoint) = crate::zkteco::endpoint(&req.path) {
        return zkteco::handle(local, req, remote, endpoint).await.into();
    }
    let path = req.path.trim_end_matches('/');
    let segs: Vec<&str> =
        if device_http::firmware_post(req.method, path, req.header_str("content-type")) {
            device_http::ROUTE.to_vec()
        } else {
            path.split('/').skip(1).collect()
        };
    let found = lookup(ROUTES, req.method, &segs);
    let principal = match (found.access(), segs.first()) {
        (Some(Access::Open), _) => None,
        // Signed routes, and unknown paths under /api and /metrics, answer only an admitted
        // caller: even their 404 comes after authentication and the permission rules.
        (Some(Access::Signed), _) | (None, Some(&"api" | &"metrics")) => {
            match access::admit(local, req, remote, &segs) {
                Ok(p) => Some(p),
                Err(e) => return Response::from(e).into(),
            }
        }
        // Every other path is the dashboard's.
        (None, _) => {
            return crate::dashboard::serve(req)
                .unwrap_or_else(|| no_route().into())
                .into();
        }
    };
    let answer = match found {
        Lookup::Found { route, params } => {
            let cx = Ctx {
                local,
                req,
                remote,
                query: Query::parse(&req.query),
                params,
                principal,
                data_dir: &api.data_dir,
                prometheus: &api.prometheus,
                backups: &api.backups,
            };
            (route.handle)(&cx).await
        }
        Lookup::WrongMethod { .. } => Err(ApiError::method_not_allowed()),
        Lookup::NotFound => Err(no_route()),
    };
    answer.unwrap_or_else(|e| Response::from(e).into())
}
