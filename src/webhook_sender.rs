//! Delivers webhook messages (`fleet::webhooks`): one thread per enabled endpoint, started and
//! joined by a supervisor thread, outside the shards. A worker takes its endpoint's next message
//! after its cursor, POSTs it (`outbound`), records the attempt (state and delivery log, one
//! synced write), and on failure waits as the rules say before it tries the same message again.
//! The supervisor also sweeps the outbox and logs past `--webhooks-retain-days`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use simd_json::prelude::*;

use crate::fleet::webhooks::{self, Endpoint, Message, Outcome, Preset};
use crate::json;
use crate::outbound::{self, Target};
use crate::shard::local::Shared;
use crate::store::commit::write_now;
use crate::store::records::{self, Source};
use crate::time::{now_ms, now_us};

/// How a sender behaves (`serve`'s `--webhooks-*` flags).
#[derive(Clone, Debug)]
pub struct Settings {
    pub allow_private: bool,
    /// The first retry's wait; each further one doubles it, up to an hour.
    pub retry_min_ms: u64,
    pub retain_ms: u64,
    /// One attempt's whole exchange: a 2xx later than this is a failure.
    pub timeout: Duration,
}

/// A worker with nothing to send looks for new messages this often.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// The supervisor's round: workers for new or re-enabled endpoints start within it.
const SUPERVISE_EVERY: Duration = Duration::from_millis(500);
const SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// ERPNext's method that records an employee check-in by a field of the Employee.
const ERPNEXT_METHOD: &str =
    "/api/method/hrms.hr.doctype.employee_checkin.employee_checkin.add_log_based_on_employee_field";

/// The running sender; dropping it stops and joins every thread.
pub struct Sender {
    stop: Arc<AtomicBool>,
    supervisor: Option<JoinHandle<()>>,
}

impl Sender {
    pub fn start(shared: Arc<Shared>, settings: Settings) -> std::io::Result<Sender> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let supervisor = std::thread::Builder::new()
            .name("fg-webhooks".into())
            .spawn(move || supervise(&shared, &settings, &flag))?;
        Ok(Sender {
            stop,
            supervisor: Some(supervisor),
        })
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.supervisor.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

fn supervise(shared: &Arc<Shared>, settings: &Settings, stop: &Arc<AtomicBool>) {
    let mut workers: HashMap<u64, JoinHandle<()>> = HashMap::new();
    let mut swept = Instant::now();
    let store = &shared.fleet.store;
    if let Err(e) = webhooks::sweep(store, settings.retain_ms) {
        tracing::warn!(error = %e, "webhook outbox sweep failed; the next one retries");
    }
    while !stop.load(Ordering::Relaxed) {
        workers.retain(|_, t| !t.is_finished());
        for e in shared.fleet.webhooks.list() {
            let c = e.config();
            if !c.enabled || workers.contains_key(&c.id) {
                continue;
            }
            let (shared, settings, stop) = (shared.clone(), settings.clone(), stop.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("fg-webhook-{:x}", c.id & 0xffff))
                .spawn(move || work(&shared, &settings, &stop, c.id));
            match spawned {
                Ok(t) => {
                    workers.insert(c.id, t);
                }
                Err(e) => tracing::error!(error = %e, "starting a webhook worker failed"),
            }
        }
        if swept.elapsed() >= SWEEP_EVERY {
            swept = Instant::now();
            if let Err(e) = webhooks::sweep(store, settings.retain_ms) {
                tracing::warn!(error = %e, "webhook outbox sweep failed; the next one retries");
            }
        }
        std::thread::park_timeout(SUPERVISE_EVERY);
    }
    for (_, t) in workers {
        let _ = t.join();
    }
}

/// Sleeps `d` in slices, so that a stop is seen soon.
fn nap(stop: &AtomicBool, d: Duration) {
    let until = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(IDLE_POLL));
    }
}

/// One endpoint's worker: runs while the endpoint exists and is enabled.
fn work(shared: &Shared, settings: &Settings, stop: &AtomicBool, id: u64) {
    let store = &shared.fleet.store;
    while !stop.load(Ordering::Relaxed) {
        let Some(ep) = shared.fleet.webhooks.get(id) else {
            return;
        };
        let c = ep.config();
        if !c.enabled {
            return;
        }
        replay(store, &ep, id);
        let (cursor, due) = {
            let s = ep.state();
            (s.cursor, s.next_attempt_at)
        };
        let now = now_ms();
        if due > now {
            nap(stop, Duration::from_millis(due - now).min(IDLE_POLL));
            continue;
        }
        let below = shared.fleet.webhooks.visible_below();
        let msg = match webhooks::next_message(store, cursor, below, &c.events) {
            Ok((Some(m), _)) => m,
            Ok((None, skipped)) => {
                if let Some(to) = skipped {
                    let s = {
                        let mut s = ep.state();
                        s.cursor = s.cursor.max(to);
                        s.clone()
                    };
                    if let Err(e) = webhooks::save_state(store, id, &s) {
                        tracing::warn!(error = %e, "saving a webhook cursor failed");
                    }
                }
                nap(stop, IDLE_POLL);
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the webhook outbox failed");
                nap(stop, Duration::from_secs(1));
                continue;
            }
        };
        if !attempt(shared, settings, &ep, &c, &msg) {
            // The attempt could not be recorded (a full disk): the same message goes again, but
            // not at once.
            nap(stop, Duration::from_secs(1));
        }
    }
}

/// A replay asked for through the API: the cursor goes back to just before `from`.
fn replay(store: &crate::store::Store, ep: &Endpoint, id: u64) {
    let from = ep
        .replay_from
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if let Some(from_us) = from {
        let s = {
            let mut s = ep.state();
            s.cursor = from_us.saturating_sub(1);
            s.failures = 0;
            s.failing_since = None;
            s.next_attempt_at = 0;
            s.clone()
        };
        if let Err(e) = webhooks::save_state(store, id, &s) {
            tracing::warn!(error = %e, "saving a webhook replay failed");
        }
    }
}

/// One attempt at `msg`, recorded; false when it could not be recorded.
fn attempt(
    shared: &Shared,
    settings: &Settings,
    ep: &Endpoint,
    c: &webhooks::Config,
    msg: &Message,
) -> bool {
    let store = &shared.fleet.store;
    let msg_id = webhooks::message_id(msg.outbox_id);
    let msg_type = message_type(&msg.body);
    let attempt_no = ep.state().failures + 1;
    let started = Instant::now();
    let outcome = match Target::parse(&c.url) {
        Err(e) => Outcome::Failed {
            status: None,
            error: format!("the URL: {e}"),
        },
        Ok(target) => match &c.preset {
            Preset::Standard => {
                let ts = jiff::Timestamp::now().as_second();
                let secrets = webhooks::signing_secrets(c, now_ms());
                match webhooks::signature(&secrets, &msg_id, ts, &msg.body) {
                    None => Outcome::Failed {
                        status: None,
                        error: "the endpoint's secret is not whsec_ base64".into(),
                    },
                    Some(sig) => {
                        let headers = [
                            ("webhook-id", msg_id.clone()),
                            ("webhook-timestamp", ts.to_string()),
                            ("webhook-signature", sig),
                        ];
                        judge(
                            outbound::post(
                                &target,
                                &headers,
                                &msg.body,
                                settings.timeout,
                                settings.allow_private,
                            ),
                            None,
                        )
                    }
                }
            }
            Preset::Erpnext {
                api_key,
                api_secret,
                employee_field,
                by_external_id,
            } => match erpnext_checkin(&msg.body, employee_field, *by_external_id) {
                Err(skip) => Outcome::Skipped { reason: skip },
                Ok(body) => {
                    let mut target = target;
                    target.path = format!("{}{ERPNEXT_METHOD}", target.path.trim_end_matches('/'));
                    let headers = [("Authorization", format!("token {api_key}:{api_secret}"))];
                    judge(
                        outbound::post(
                            &target,
                            &headers,
                            body.as_bytes(),
                            settings.timeout,
                            settings.allow_private,
                        ),
                        Some("already has a log with the same timestamp"),
                    )
                }
            },
        },
    };
    let latency = started.elapsed().as_millis() as u64;
    let now = now_ms();
    let before = ep.state().clone();
    let (state, disable) =
        webhooks::after_attempt(before, msg.outbox_id, &outcome, now, settings.retry_min_ms);
    let line = webhooks::log_line(now, &msg_id, &msg_type, attempt_no, &outcome, latency);
    if shared.fleet.webhooks.get(c.id).is_none() {
        // Deleted while the request was out: nothing of it is written back.
        return true;
    }
    if let Err(e) = webhooks::record_attempt(store, c.id, &state, &line, now_us()) {
        // The state stays as it was in memory too: the message is tried again.
        tracing::warn!(error = %e, "recording a webhook attempt failed");
        return false;
    }
    let result = match &outcome {
        Outcome::Delivered { .. } => "delivered",
        Outcome::Skipped { .. } => "skipped",
        Outcome::Failed { .. } => "failed",
    };
    metrics::counter!("fleetgate_webhook_attempts_total", "result" => result).increment(1);
    metrics::histogram!("fleetgate_webhook_latency_seconds").record(latency as f64 / 1000.0);
    *ep.state() = state;
    if let Some(reason) = disable {
        disable_endpoint(shared, c, &reason);
    }
    true
}

/// A 2xx is delivered (or, for ERPNext, an answer saying it has the check-in already); anything
/// else, a redirect included, failed.
fn judge(answer: outbound::Answer, duplicate: Option<&str>) -> Outcome {
    match answer {
        Ok(r) if (200..300).contains(&r.status) => Outcome::Delivered { status: r.status },
        Ok(r) if duplicate.is_some_and(|d| r.text().contains(d)) => {
            Outcome::Delivered { status: r.status }
        }
        Ok(r) => Outcome::Failed {
            status: Some(r.status),
            error: if (300..400).contains(&r.status) {
                format!("HTTP {}: redirects are not followed", r.status)
            } else {
                format!("HTTP {}", r.status)
            },
        },
        Err(e) => Outcome::Failed {
            status: None,
            error: e,
        },
    }
}

/// The message's `type`, read from its body (the log shows it).
fn message_type(body: &[u8]) -> String {
    crate::raw_member::span(body, b"type")
        .and_then(|r| body.get(r))
        .map(|t| String::from_utf8_lossy(t).trim_matches('"').to_string())
        .unwrap_or_default()
}

/// A punch message as ERPNext's check-in: the Employee found by `employee_field` holding the
/// PIN (or the person's `external_id`), the terminal's wall time, the terminal, and IN/OUT from
/// the punch's state when it has one. `Err` is why the punch cannot be sent (it is skipped).
fn erpnext_checkin(
    body: &[u8],
    employee_field: &str,
    by_external_id: bool,
) -> Result<String, String> {
    let mut b = body.to_vec();
    let v = simd_json::to_owned_value(&mut b).map_err(|_| "the message is not JSON".to_string())?;
    let data = v.get("data").ok_or("the message has no data")?;
    if v.get("type").and_then(|t| t.as_str()) != Some("attendance.punch") {
        return Err("only punches become check-ins".into());
    }
    let value = if by_external_id {
        data.get("person")
            .and_then(|p| p.get("external_id"))
            .and_then(|x| x.as_str())
            .map(str::to_string)
            .ok_or("the punch's PIN has no person with an external_id")?
    } else {
        data.get("enrollid")
            .and_then(|x| x.as_u64())
            .map(|n| n.to_string())
            .ok_or("the punch has no enrollid")?
    };
    let time = data
        .get("local_time")
        .and_then(|t| t.as_str())
        .and_then(crate::fleet::attendance::parse_time)
        .map(|(t, _)| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
        .ok_or("the punch has no local time")?;
    let device = data
        .get("serial")
        .and_then(|s| s.as_str())
        .or_else(|| data.get("device_id").and_then(|s| s.as_str()))
        .unwrap_or("");
    let mut out = String::from("{\"employee_field_value\":");
    json::push_str(&mut out, &value);
    out.push_str(",\"timestamp\":");
    json::push_str(&mut out, &time);
    out.push_str(",\"device_id\":");
    json::push_str(&mut out, device);
    if let Some(t) = log_type(data.get("fields")) {
        out.push_str(&format!(",\"log_type\":\"{t}\""));
    }
    out.push_str(",\"employee_fieldname\":");
    json::push_str(&mut out, employee_field);
    out.push('}');
    Ok(out)
}

/// IN or OUT from a punch's state as terminals write it: `inout` 0/1 (AiFace, ZKTeco status),
/// SmackBio's `AttendStat` "Duty On"/"Duty Off".
fn log_type(fields: Option<&simd_json::OwnedValue>) -> Option<&'static str> {
    let f = fields?;
    let inout = f.get("inout").and_then(|v| {
        v.as_i64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
    });
    match inout {
        Some(0) => return Some("IN"),
        Some(1) => return Some("OUT"),
        _ => {}
    }
    let stat = f
        .get("AttendStat")
        .and_then(|v| v.as_str())?
        .to_ascii_lowercase();
    if stat.contains("off") || stat.contains("out") {
        Some("OUT")
    } else if stat.contains("on") || stat.contains("in") {
        Some("IN")
    } else {
        None
    }
}

/// Disables an endpoint that failed for days, with a `webhook_disabled` event (a server event of
/// no device, in `GET /api/events`).
fn disable_endpoint(shared: &Shared, c: &webhooks::Config, reason: &str) {
    let fleet = &shared.fleet;
    let mut disabled = c.clone();
    disabled.enabled = false;
    disabled.updated_at = now_ms();
    let mut payload = format!(
        "{{\"webhook_id\":\"{}\",\"url\":",
        webhooks::public_id(c.id)
    );
    json::push_str(&mut payload, &c.url);
    payload.push_str(",\"reason\":");
    json::push_str(&mut payload, reason);
    payload.push('}');
    let id = fleet.store.ids.next(now_us());
    let written = write_now(&fleet.store, |st| {
        webhooks::stage_config(st, &disabled)?;
        records::stage_event(
            st,
            id,
            None,
            "webhook_disabled",
            Source::Server,
            &payload,
            None,
        )
    });
    match written {
        Ok(()) => {
            tracing::warn!(webhook = %webhooks::public_id(c.id), url = %c.url, reason, "webhook endpoint disabled");
            fleet.webhooks.changed(disabled);
        }
        Err(e) => {
            tracing::warn!(error = %e, "disabling a webhook endpoint failed; it keeps retrying")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn punches_become_erpnext_checkins() {
        let body = br#"{"type":"attendance.punch","timestamp":"2026-06-12T00:00:05.000Z","data":{"id":"ab","device_id":"d1","serial":"ZK1","enrollid":7,"local_time":"2026-06-12 09:00:05","fields":{"enrollid":7,"inout":1},"person":{"name":"Ann","external_id":"HR-EMP-0007"}}}"#;
        assert_eq!(
            erpnext_checkin(body, "attendance_device_id", false).as_deref(),
            Ok(
                r#"{"employee_field_value":"7","timestamp":"2026-06-12 09:00:05","device_id":"ZK1","log_type":"OUT","employee_fieldname":"attendance_device_id"}"#
            )
        );
        let by_id = erpnext_checkin(body, "name", true).expect("a check-in");
        assert!(
            by_id.starts_with(r#"{"employee_field_value":"HR-EMP-0007""#),
            "{by_id}"
        );
        let nobody = br#"{"type":"attendance.punch","data":{"enrollid":8,"local_time":"2026-06-12T09:00:05","fields":{"AttendStat":"Duty On"}}}"#;
        assert!(
            erpnext_checkin(nobody, "name", true).is_err(),
            "no external_id: skipped"
        );
        let plain = erpnext_checkin(nobody, "attendance_device_id", false).expect("a check-in");
        assert!(
            plain.contains(r#""timestamp":"2026-06-12 09:00:05""#),
            "{plain}"
        );
        assert!(plain.contains(r#""log_type":"IN""#), "{plain}");
        let event = br#"{"type":"device.event","data":{}}"#;
        assert!(erpnext_checkin(event, "x", false).is_err());
    }

    #[test]
    fn only_a_2xx_or_an_erpnext_duplicate_is_delivered() {
        let answer = |status: u16, body: &str| {
            Ok(crate::http::client::Response {
                status,
                headers: Vec::new(),
                body: body.as_bytes().to_vec(),
            })
        };
        assert_eq!(
            judge(answer(204, ""), None),
            Outcome::Delivered { status: 204 }
        );
        assert!(
            matches!(judge(answer(302, ""), None), Outcome::Failed { status: Some(302), ref error } if error.contains("redirects"))
        );
        let dup = "This employee already has a log with the same timestamp";
        assert_eq!(
            judge(
                answer(417, dup),
                Some("already has a log with the same timestamp")
            ),
            Outcome::Delivered { status: 417 }
        );
        assert!(matches!(
            judge(answer(417, dup), None),
            Outcome::Failed { .. }
        ));
        assert!(matches!(
            judge(Err("refused".into()), None),
            Outcome::Failed { status: None, .. }
        ));
        assert_eq!(
            message_type(br#"{"type":"attendance.punch","data":{}}"#),
            "attendance.punch"
        );
    }
}
