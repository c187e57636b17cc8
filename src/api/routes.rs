//! Every route of the API: method, path pattern, who may call it, and its handler. Dispatch, 405
//! and 404 all come from this one table. `GET` routes do not answer `HEAD` unless listed for it.

use crate::api::attendance;
use crate::api::backup;
use crate::api::device_http;
use crate::api::devices;
use crate::api::events;
use crate::api::export;
use crate::api::pending;
use crate::api::people;
use crate::api::router::{Route, later, ready};
use crate::api::session;
use crate::api::status;
use crate::api::tokens;
use crate::api::users;
use crate::api::webhooks;
use crate::http::request::Method::{Delete, Get, Head, Patch, Post};
use crate::shard::handler::Reply;

// One route a line, so the table reads as a table; rustfmt would spread the longer ones out.
#[rustfmt::skip]
pub static ROUTES: &[Route] = &[
    Route::open(Get, &["healthz"], |cx| ready(status::health(cx))),
    Route::open(Head, &["healthz"], |cx| ready(status::health(cx))),
    // Devices identify themselves by serial on this route, not with a token. AiFace HTTP firmware
    // posting to `/` or `/face` is served here too (`device_http::firmware_post`).
    Route::open(Post, device_http::ROUTE, |cx| later(device_http::handle(cx))),
    // Login creates the session, logout ends it. Neither needs the CSRF header: login has no
    // session yet, and a forged logout only logs someone out.
    Route::open(Post, &["api", "login"], |cx| ready(session::login(cx))),
    Route::open(Post, &["api", "logout"], |cx| ready(session::logout(cx))),
    Route::signed(Get, &["metrics"], |cx| ready(status::metrics(cx))),
    Route::signed(Get, &["api", "me"], |cx| ready(session::me(cx))),
    Route::signed(Post, &["api", "me", "password"], |cx| later(session::change_password(cx))),
    Route::signed(Get, &["api", "users"], |cx| ready(users::list(cx))),
    Route::signed(Post, &["api", "users"], |cx| later(users::create(cx))),
    Route::signed(Patch, &["api", "users", ":name"], |cx| later(users::patch(cx))),
    Route::signed(Delete, &["api", "users", ":name"], |cx| later(users::delete(cx))),
    Route::signed(Get, &["api", "tokens"], |cx| ready(tokens::list(cx))),
    Route::signed(Post, &["api", "tokens"], |cx| later(tokens::create(cx))),
    Route::signed(Delete, &["api", "tokens", ":id"], |cx| later(tokens::delete(cx))),
    Route::signed(Get, &["api", "stats"], |cx| ready(status::stats(cx))),
    Route::signed(Get, &["api", "devices"], |cx| ready(devices::list(cx))),
    Route::signed(Post, &["api", "devices"], |cx| later(devices::create(cx))),
    Route::signed(Get, &["api", "devices", ":id"], |cx| ready(devices::get(cx))),
    Route::signed(Patch, &["api", "devices", ":id"], |cx| later(devices::patch(cx))),
    Route::signed(Delete, &["api", "devices", ":id"], |cx| later(devices::delete(cx))),
    Route::signed(Post, &["api", "devices", ":id", "token"], |cx| later(devices::rotate_token(cx))),
    Route::signed(Get, &["api", "devices", ":id", "telemetry"], |cx| later(devices::telemetry(cx))),
    Route::signed(Get, &["api", "devices", ":id", "users"], |cx| ready(devices::users(cx))),
    Route::signed(Get, &["api", "devices", ":id", "telemetry.ndjson"], |cx| ready(export::telemetry(cx).map(Reply::Chunked))),
    Route::signed(Get, &["api", "devices", ":id", "commands"], |cx| ready(devices::commands(cx))),
    Route::signed(Post, &["api", "devices", ":id", "commands"], |cx| later(devices::send_command(cx))),
    Route::signed(Get, &["api", "events"], |cx| later(events::list(cx))),
    Route::signed(Get, &["api", "events.ndjson"], |cx| ready(export::events(cx).map(Reply::Chunked))),
    Route::signed(Get, &["api", "attendance"], |cx| later(attendance::list(cx))),
    Route::signed(Get, &["api", "attendance.csv"], |cx| ready(attendance::csv(cx).map(Reply::Chunked))),
    Route::signed(Get, &["api", "attendance", ":id", "photo"], |cx| ready(attendance::photo(cx))),
    Route::signed(Get, &["api", "people"], |cx| ready(people::list(cx))),
    Route::signed(Post, &["api", "people"], |cx| later(people::create(cx))),
    Route::signed(Get, &["api", "people", ":pin"], |cx| ready(people::get(cx))),
    Route::signed(Patch, &["api", "people", ":pin"], |cx| later(people::patch(cx))),
    Route::signed(Delete, &["api", "people", ":pin"], |cx| later(people::delete(cx))),
    Route::signed(Post, &["api", "people", ":pin", "sync"], |cx| later(people::sync(cx))),
    Route::signed(Get, &["api", "webhooks"], |cx| ready(webhooks::list(cx))),
    Route::signed(Post, &["api", "webhooks"], |cx| later(webhooks::create(cx))),
    Route::signed(Get, &["api", "webhooks", ":id"], |cx| ready(webhooks::get(cx))),
    Route::signed(Patch, &["api", "webhooks", ":id"], |cx| later(webhooks::patch(cx))),
    Route::signed(Delete, &["api", "webhooks", ":id"], |cx| later(webhooks::delete(cx))),
    Route::signed(Post, &["api", "webhooks", ":id", "rotate-secret"], |cx| later(webhooks::rotate_secret(cx))),
    Route::signed(Post, &["api", "webhooks", ":id", "replay"], |cx| ready(webhooks::replay(cx))),
    Route::signed(Get, &["api", "webhooks", ":id", "deliveries"], |cx| ready(webhooks::deliveries(cx))),
    Route::signed(Get, &["api", "pending-devices"], |cx| ready(pending::list(cx))),
    Route::signed(Post, &["api", "pending-devices", ":serial", "approve"], |cx| later(pending::approve(cx))),
    Route::signed(Post, &["api", "pending-devices", ":serial", "dismiss"], |cx| later(pending::dismiss(cx))),
    Route::signed(Delete, &["api", "pending-devices", ":serial"], |cx| later(pending::dismiss(cx))),
    // Admins only (`access`): it writes where the caller says, and the copy holds every secret.
    Route::signed(Post, &["api", "backup"], |cx| later(backup::create(cx))),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::router::{Access, Lookup, lookup};
    use crate::http::request::Method;

    fn find(method: Method, path: &str) -> Lookup<'static, '_> {
        let segs: Vec<&str> = path.split('/').skip(1).collect();
        // The segments must outlive the lookup; leaking them is fine in a test.
        lookup(ROUTES, method, Box::leak(segs.into_boxed_slice()))
    }

    fn found(method: Method, path: &str) -> (&'static [&'static str], Vec<(&'static str, &str)>) {
        match find(method, path) {
            Lookup::Found { route, params } => (route.path, params),
            _ => panic!("{method:?} {path} found no route"),
        }
    }

    #[test]
    fn a_known_path_with_another_method_is_405_and_an_unknown_path_404() {
        assert_eq!(found(Get, "/api/devices").0, ["api", "devices"]);
        assert!(matches!(
            find(Method::Put, "/api/devices"),
            Lookup::WrongMethod {
                access: Access::Signed
            }
        ));
        assert!(matches!(
            find(Method::Other, "/api/devices/x/commands"),
            Lookup::WrongMethod { .. }
        ));
        assert!(matches!(find(Get, "/api/devices/x/nope"), Lookup::NotFound));
        assert!(matches!(find(Get, "/api/device"), Lookup::NotFound));
        assert!(matches!(
            find(Get, "/api/devices/x/commands/y"),
            Lookup::NotFound
        ));
        assert!(matches!(find(Get, "/api"), Lookup::NotFound));
    }

    #[test]
    fn head_is_answered_only_where_listed() {
        assert!(matches!(find(Head, "/healthz"), Lookup::Found { .. }));
        assert!(matches!(
            find(Head, "/api/devices"),
            Lookup::WrongMethod { .. }
        ));
        assert!(matches!(find(Head, "/metrics"), Lookup::WrongMethod { .. }));
    }

    #[test]
    fn parameters_are_named_by_the_pattern() {
        assert_eq!(
            found(Post, "/api/devices/abc/commands"),
            (
                &["api", "devices", ":id", "commands"][..],
                vec![("id", "abc")]
            )
        );
        assert_eq!(
            found(Delete, "/api/pending-devices/SN-1").1,
            vec![("serial", "SN-1")]
        );
        assert_eq!(found(Patch, "/api/users/ann").1, vec![("name", "ann")]);
        assert_eq!(
            found(Get, "/api/attendance/00ff/photo").1,
            vec![("id", "00ff")]
        );
        // An empty segment is still a segment; the handler finds that it names nothing.
        assert_eq!(found(Post, "/api/devices//token").1, vec![("id", "")]);
    }

    #[test]
    fn open_routes_are_the_ones_that_authenticate_themselves_or_need_nothing() {
        assert!(matches!(
            find(Get, "/api/login"),
            Lookup::WrongMethod {
                access: Access::Open
            }
        ));
        assert!(matches!(
            find(Method::Put, "/healthz"),
            Lookup::WrongMethod {
                access: Access::Open
            }
        ));
        let open: Vec<_> = ROUTES
            .iter()
            .filter(|r| r.access == Access::Open)
            .map(|r| r.path.join("/"))
            .collect();
        assert_eq!(
            open,
            [
                "healthz",
                "healthz",
                "api/device-http",
                "api/login",
                "api/logout"
            ]
        );
    }

    #[test]
    fn every_path_has_one_access_and_no_route_is_listed_twice() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                if a.path == b.path {
                    assert_eq!(a.access, b.access, "{:?}", a.path);
                    assert_ne!(a.method, b.method, "{:?} twice", a.path);
                }
            }
            // Parameters take whole segments and have names.
            assert!(a.path.iter().all(|s| *s != ":"), "{:?}", a.path);
        }
    }
}
