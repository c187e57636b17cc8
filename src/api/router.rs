//! Matching a request against a route table: a path pattern per route, so the one table that
//! dispatches also tells a wrong method (405) from a path no route has (404).

use std::future::Future;
use std::pin::Pin;

use crate::api::context::Ctx;
use crate::api::error::ApiError;
use crate::http::request::Method;
use crate::shard::handler::Reply;

/// Who may reach a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No authentication: health checks, devices that identify themselves by serial, login and
    /// logout.
    Open,
    /// A principal that the permission rules admit.
    Signed,
}

/// What a handler answers, later: a reply, or an error to answer instead. Boxed because every
/// handler's future is a type of its own and the table holds one type.
pub type Answer<'a> = Pin<Box<dyn Future<Output = Result<Reply, ApiError>> + 'a>>;

pub type Handle = for<'a> fn(&'a Ctx<'a>) -> Answer<'a>;

pub struct Route {
    pub method: Method,
    /// Path segments; `:name` matches any one segment and hands it to the handler as `name`.
    pub path: &'static [&'static str],
    pub access: Access,
    pub handle: Handle,
}

impl Route {
    /// A route anyone may call.
    pub const fn open(method: Method, path: &'static [&'static str], handle: Handle) -> Route {
        Route {
            method,
            path,
            access: Access::Open,
            handle,
        }
    }

    /// A route for an authenticated principal that the permission rules admit.
    pub const fn signed(method: Method, path: &'static [&'static str], handle: Handle) -> Route {
        Route {
            method,
            path,
            access: Access::Signed,
            handle,
        }
    }
}

/// What the table says about a request's method and path.
pub enum Lookup<'r, 'p> {
    Found {
        route: &'r Route,
        params: Vec<(&'static str, &'p str)>,
    },
    /// Routes have this path, but none this method.
    WrongMethod {
        access: Access,
    },
    NotFound,
}

impl Lookup<'_, '_> {
    /// Who may learn what the table says: `None` when no route has the path.
    pub fn access(&self) -> Option<Access> {
        match self {
            Lookup::Found { route, .. } => Some(route.access),
            Lookup::WrongMethod { access } => Some(*access),
            Lookup::NotFound => None,
        }
    }
}

pub fn lookup<'r, 'p>(table: &'r [Route], method: Method, segs: &[&'p str]) -> Lookup<'r, 'p> {
    let mut wrong_method = None;
    for route in table {
        let Some(params) = matches(route.path, segs) else {
            continue;
        };
        if route.method == method {
            return Lookup::Found { route, params };
        }
        wrong_method.get_or_insert(route.access);
    }
    match wrong_method {
        Some(access) => Lookup::WrongMethod { access },
        None => Lookup::NotFound,
    }
}

/// The `:name` segments' values if `segs` fits `pattern`.
fn matches<'p>(
    pattern: &'static [&'static str],
    segs: &[&'p str],
) -> Option<Vec<(&'static str, &'p str)>> {
    if pattern.len() != segs.len() {
        return None;
    }
    let mut params = Vec::new();
    for (p, s) in pattern.iter().zip(segs) {
        match p.strip_prefix(':') {
            Some(name) => params.push((name, *s)),
            None if p == s => {}
            None => return None,
        }
    }
    Some(params)
}

/// The answer of a handler that does not wait.
pub fn ready<'a, R: Into<Reply>>(answer: Result<R, ApiError>) -> Answer<'a> {
    Box::pin(std::future::ready(answer.map(Into::into)))
}

/// The answer of a handler that waits (for a commit, mostly).
pub fn later<'a, R: Into<Reply>>(
    answer: impl Future<Output = Result<R, ApiError>> + 'a,
) -> Answer<'a> {
    Box::pin(async move { answer.await.map(Into::into) })
}
