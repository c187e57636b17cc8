//! The admin REST API (JSON over HTTP), plus `/healthz` and `/metrics`.
//!
//! Every `/api/*` route (but login, logout and the devices' own `/api/device-http`) needs a
//! principal (`accounts::Principal`): the bootstrap admin token or a named API token as
//! `Authorization: Bearer`, or a dashboard session cookie; `access` has the permission rules.
//! `routes` is the one table of routes. Errors are `{"error":{"code","message"}}` with the
//! matching status (`error::ApiError`). Lists are `{"items":[...],"next_cursor"}`. Other paths
//! serve the dashboard.

mod access;
pub mod attendance;
mod backup;
mod body;
mod context;
pub mod device_http;
mod devices;
mod dispatch;
mod error;
mod events;
mod export;
pub mod history;
mod page;
mod pending;
mod people;
mod query;
mod router;
mod routes;
mod session;
mod status;
mod tokens;
mod users;
mod webhooks;
mod zkteco;

pub use dispatch::Api;
