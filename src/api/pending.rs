//! Pending devices: serials that tried to connect, waiting for an admin's decision.

use crate::api::body::JsonObject;
use crate::api::context::Ctx;
use crate::api::devices;
use crate::api::error::ApiError;
use crate::api::page::page;
use crate::api::query::{Query, bad_cursor};
use crate::fleet::auth;
use crate::fleet::pending::{PendingDevice, Position};
use crate::fleet::provision::{NewDevice, ProvisionError, provision};
use crate::http::response::Response;
use crate::json;
use crate::store::Cf;
use crate::time::rfc3339_ms;

fn item(p: &PendingDevice) -> String {
    let mut s = String::from("{\"serial\":");
    json::push_str(&mut s, &p.serial);
    s.push_str(",\"protocol\":\"");
    s.push_str(p.protocol.as_str());
    s.push_str("\",\"first_seen\":\"");
    s.push_str(&rfc3339_ms(p.first_seen));
    s.push_str("\",\"last_seen\":\"");
    s.push_str(&rfc3339_ms(p.last_seen));
    s.push_str("\",\"model\":");
    match &p.model {
        Some(m) => json::push_str(&mut s, m),
        None => s.push_str("null"),
    }
    s.push_str(",\"firmware\":");
    match &p.firmware {
        Some(m) => json::push_str(&mut s, m),
        None => s.push_str("null"),
    }
    s.push_str(",\"remote\":");
    json::push_str(&mut s, &p.remote);
    s.push_str(",\"requests\":");
    s.push_str(&p.requests.to_string());
    s.push('}');
    s
}

fn no_pending() -> ApiError {
    ApiError::not_found("no pending device with this serial")
}

/// The cursor of a page that ends at `p`: its last activity and serial (hex, so any serial
/// survives a query string), opaque to clients.
fn cursor(p: &Position) -> String {
    format!("{}.{}", p.0, auth::hex(p.1.as_bytes()))
}

/// `cursor`, as `cursor` wrote it.
fn position(q: &Query) -> Result<Option<Position>, ApiError> {
    let Some(c) = q.given("cursor") else {
        return Ok(None);
    };
    let (seen, serial) = c.split_once('.').ok_or_else(bad_cursor)?;
    let seen = seen.parse::<u64>().map_err(|_| bad_cursor())?;
    let serial = auth::unhex(serial)
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(bad_cursor)?;
    Ok(Some((seen, serial)))
}

/// Newest activity first, `limit` per page (the list holds up to `pending::MAX_PENDING`).
pub fn list(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let limit = cx.query.limit()?;
    let after = position(&cx.query)?;
    let (entries, next) = cx.local.fleet().pending.page(after.as_ref(), limit);
    let items: Vec<String> = entries.iter().map(item).collect();
    Ok(page(&items, next.as_ref().map(cursor)))
}

pub async fn approve(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let serial = cx.param("serial");
    let fleet = cx.local.fleet();
    if fleet.pending.get(serial).is_none() {
        return Err(no_pending());
    }
    let body = JsonObject::from_request(cx.req)?;
    let name = devices::new_name(&body)?;
    let settings = devices::settings(&body)?.unwrap_or_default();
    // Take the entry before the commit's wait, so that of concurrent approvals exactly one
    // creates the device (provisioning also reserves the serial).
    let p = fleet.pending.remove(serial).ok_or_else(no_pending)?;
    let new = NewDevice {
        name,
        protocol: p.protocol,
        serial: Some(p.serial.clone()),
        settings,
        info: None,
    };
    match provision(fleet, &cx.local.batcher, new, |st| {
        st.delete(Cf::Pending, serial.as_bytes())
    })
    .await
    {
        Ok((dev, token)) => Ok(devices::created(&dev, &token)),
        Err(ProvisionError::SerialTaken) => Err(ApiError::new(
            409,
            "serial_taken",
            "a device with this serial exists or is being created",
        )),
        Err(ProvisionError::Failed(e)) => {
            fleet.pending.restore(p);
            Err(ApiError::unavailable(e))
        }
        Err(ProvisionError::Cluster(why)) => {
            fleet.pending.restore(p);
            Err(ApiError::cluster_unavailable(&why))
        }
    }
}

pub async fn dismiss(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let serial = cx.param("serial");
    cx.local
        .fleet()
        .pending
        .remove(serial)
        .ok_or_else(no_pending)?;
    cx.local
        .batcher
        .commit(|st| st.delete(Cf::Pending, serial.as_bytes()))
        .await?;
    let mut s = String::from("{\"serial\":");
    json::push_str(&mut s, serial);
    s.push_str(",\"dismissed\":true}");
    Ok(Response::json(200, s.into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_read_back_as_the_position_they_were_written_from() {
        for p in [
            (0, String::new()),
            (1_750_000_000_000, "SN 1/ä&x=\"".to_string()),
        ] {
            let c = cursor(&p);
            let q = Query::parse(&format!("cursor={c}"));
            assert_eq!(position(&q), Ok(Some(p)), "{c}");
        }
        assert_eq!(position(&Query::parse("")), Ok(None));
        assert_eq!(position(&Query::parse("cursor=")), Ok(None));
    }

    #[test]
    fn foreign_cursors_are_refused_as_every_list_refuses_them() {
        for bad in ["x", "12", "12.zz", "a.00", "-1.41", "12.0", "12.ff", "p100"] {
            let e = position(&Query::parse(&format!("cursor={bad}"))).expect_err(bad);
            assert_eq!(e, bad_cursor(), "{bad}");
        }
    }
}
