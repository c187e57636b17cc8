//! The rules for ZKTeco ADMS terminals, which poll over HTTP (`fleetgate_core::zkteco` reads
//! their requests and writes the answers): their uploads stored once and acknowledged only once
//! durable, where each table's records stop (the stamps their handshake is told), what they say of
//! themselves, and the commands handed out on a poll and kept until the terminal answers
//! (`handed_out`).

use std::rc::Rc;

use jiff::civil::DateTime;
use sha2::{Digest, Sha256};
use simd_json::prelude::*;

use crate::fleet::attendance::{self, NOT_STORED, dedup_key};
use crate::fleet::commands;
use crate::fleet::enrolled;
use crate::fleet::handed_out::Overdue;
use crate::fleet::people;
use crate::fleet::registry::Device;
use crate::fleet::state::Fleet;
use crate::fleet::webhooks;
use crate::json;
use crate::store::commit::{Batcher, Staging, Ticket};
use crate::store::records::{self, CommandStatus};
use crate::store::{Cf, StoreError, keys};
use crate::time::{now_us, rfc3339_ms};
use crate::zkteco::command;
use crate::zkteco::tables::{self, AttPhoto, OperLine};

/// Fields kept of what a terminal says of itself (its handshake, `INFO`, `table=options`).
const MAX_INFO_FIELDS: usize = 64;
/// Commands handed out in the answer to one poll.
pub const MAX_PER_POLL: usize = 8;

/// Waits for a ticket: whether what it holds is durable (true when nothing was staged).
async fn durable(ticket: Option<Rc<Ticket>>) -> bool {
    match ticket {
        Some(t) => t.wait().await,
        None => true,
    }
}

fn not_stored(e: StoreError) -> &'static str {
    tracing::error!(error = %e, "staging a ZKTeco upload failed");
    NOT_STORED
}

/// Stages where the server's records of a table stop, in the batch of the records themselves
/// (a stamp never gets ahead of what it stands for). The device in memory takes the stamp only
/// once that batch has committed (`Stamped::commit`): taken before, a failed commit would leave
/// it there, and the upload sent again would not stage it.
fn stage_stamp<'s>(
    st: &mut Staging<'_>,
    dev: &Device,
    stamp: Option<(&'static str, &'s str)>,
) -> Result<Stamped<'s>, StoreError> {
    let Some((name, value)) = stamp else {
        return Ok(Stamped(None));
    };
    if dev.with_record(|r| r.stamps.get(name).map(String::as_str) == Some(value)) {
        return Ok(Stamped(None));
    }
    let mut rec = dev.record();
    rec.stamps.insert(name.to_string(), value.to_string());
    records::stage_device(st, &rec)?;
    Ok(Stamped(Some((name, value))))
}

/// A stamp staged, to take into the device once its batch has committed.
#[derive(Default)]
struct Stamped<'s>(Option<(&'static str, &'s str)>);

impl Stamped<'_> {
    fn commit(self, dev: &Device) {
        if let Some((name, value)) = self.0 {
            dev.update_record(|r| {
                r.stamps.insert(name.to_string(), value.to_string());
            });
        }
    }
}

/// Stores an `ATTLOG` upload: punches once each (a photo uploaded before its punch is linked),
/// unreadable lines kept as `attendance_invalid` events. `Ok(n)`: the lines, all durable.
pub async fn store_attlog(
    fleet: &Fleet,
    batch: &Batcher,
    dev: &Device,
    body: &[u8],
    stamp: Option<(&'static str, &str)>,
) -> Result<usize, &'static str> {
    let list = tables::attlog(body);
    let store = &fleet.store;
    let ticket = attendance::stage_records_with(fleet, batch, dev, &list, |primary| {
        store.exists(Cf::Photos, primary)
    })
    .map_err(not_stored)?;
    // An upload that stored nothing new is a re-send of what the server has (after a lost
    // answer, perhaps processed after a newer upload): it says nothing of where the records stop,
    // so it keeps the stamp there is rather than taking it back to its own.
    let stamp = stamp
        .filter(|(name, _)| ticket.is_some() || dev.with_record(|r| !r.stamps.contains_key(*name)));
    // Staged before any wait, so it rides in the records' batch (it is that batch's ticket).
    let mut stamped = Stamped::default();
    let stamp_ticket = batch
        .stage(|st| {
            stamped = stage_stamp(st, dev, stamp)?;
            Ok(())
        })
        .map_err(not_stored)?;
    let ticket = ticket.or_else(|| stamped.0.is_some().then_some(stamp_ticket));
    if durable(ticket).await {
        stamped.commit(dev);
        Ok(list.len())
    } else {
        Err(NOT_STORED)
    }
}

/// A line's identity among a device's uploads: the same line re-sent is kept once.
fn line_identity(table: &str, line: &str) -> [u8; 16] {
    let d = Sha256::new()
        .chain_update(table.as_bytes())
        .chain_update([0])
        .chain_update(line.as_bytes())
        .finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// Stages an event for an uploaded line once (`attendance_dedup` holds the line's identity).
/// Returns the event's id and payload when it was new.
fn stage_line_event(
    fleet: &Fleet,
    st: &mut Staging<'_>,
    dev: &Device,
    kind: &str,
    payload: &str,
    identity: [u8; 16],
) -> Result<Option<u64>, StoreError> {
    let key = dedup_key(&dev.id, &identity);
    if fleet.store.exists(Cf::AttendanceDedup, &key)? {
        return Ok(None);
    }
    let id = fleet.store.ids.next(now_us());
    webhooks::stage_device_event(&fleet.webhooks, st, id, &dev.id, kind, payload, None)?;
    st.put(Cf::AttendanceDedup, &key, &keys::event(id))?;
    Ok(Some(id))
}

/// A line this server does not read, as an event: `{"table","line"}`.
fn unread_payload(table: &str, line: &str) -> String {
    let mut p = String::from("{\"table\":");
    json::push_str(&mut p, table);
    p.push_str(",\"line\":");
    json::push_str(&mut p, line);
    p.push('}');
    p
}

/// Stores an `OPERLOG` upload, or any other table's lines (`table` names it): people and their
/// credentials into the registry of enrolled users, operations as `terminal_operation` events,
/// lines not read as `zkteco_unread` events (each line once). `Ok(n)`: the lines, all durable.
pub async fn store_lines(
    fleet: &Fleet,
    batch: &Batcher,
    dev: &Device,
    table: &str,
    body: &[u8],
    stamp: Option<(&'static str, &str)>,
) -> Result<usize, &'static str> {
    let lines = if table == "OPERLOG" {
        tables::operlog(body)
    } else {
        body.split(|&b| b == b'\n')
            .map(|l| String::from_utf8_lossy(l.strip_suffix(b"\r").unwrap_or(l)).into_owned())
            .filter(|l| !l.trim().is_empty())
            .map(|line| OperLine::Unread { line })
            .collect()
    };
    let mut events = Vec::new();
    let mut adopted = Vec::new();
    let mut stamped = Stamped::default();
    let ticket = batch
        .stage(|st| {
            for l in &lines {
                match l {
                    OperLine::Enrolled {
                        pin,
                        backupnum,
                        payload,
                    } => {
                        let at = fleet.store.ids.next(now_us());
                        enrolled::stage(st, &dev.id, *pin, *backupnum, payload, at)?;
                        // The terminal's user becomes the registry's person when the PIN has none.
                        if backupnum.is_none()
                            && !adopted.iter().any(|p: &people::Person| p.pin == *pin)
                            && let Some(p) = reported_person(*pin, payload, &lines)
                            && let Some(p) = people::stage_reported(&fleet.people, st, &p)?
                        {
                            adopted.push(p);
                        }
                    }
                    OperLine::Operation { payload, line } => {
                        let identity = line_identity(table, line);
                        let kind = "terminal_operation";
                        if let Some(id) = stage_line_event(fleet, st, dev, kind, payload, identity)?
                        {
                            events.push((id, kind, payload.clone()));
                        }
                    }
                    OperLine::Unread { line } => {
                        let payload = unread_payload(table, line);
                        let identity = line_identity(table, line);
                        let kind = "zkteco_unread";
                        if let Some(id) =
                            stage_line_event(fleet, st, dev, kind, &payload, identity)?
                        {
                            events.push((id, kind, payload));
                        }
                    }
                }
            }
            stamped = stage_stamp(st, dev, stamp)?;
            Ok(())
        })
        .map_err(not_stored)?;
    if !ticket.wait().await {
        return Err(NOT_STORED);
    }
    stamped.commit(dev);
    people::reported(&fleet.people, batch, adopted);
    if fleet.has_admins() {
        let d = dev.id.to_string();
        for (id, kind, payload) in events {
            let ts = rfc3339_ms(id / 1000);
            fleet.broadcast(crate::generic::event_broadcast(&d, kind, &ts, &payload));
        }
    }
    Ok(tables::count_lines(body))
}

/// The person a `USER` line reports (its `name`, `admin` as the terminal's `Pri`: 14 is an admin,
/// 0 a user, anything between a manager), with the card the same upload gives the PIN. None
/// without a name: a person needs one.
fn reported_person(pin: u64, payload: &str, lines: &[OperLine]) -> Option<people::Person> {
    let mut b = payload.as_bytes().to_vec();
    let v = simd_json::to_owned_value(&mut b).ok()?;
    let name = v
        .get("name")
        .and_then(|n| n.as_str())
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| {
            // At most MAX_NAME bytes, cut at a character's edge.
            let mut end = n.len().min(people::MAX_NAME);
            while !n.is_char_boundary(end) {
                end -= 1;
            }
            n[..end].to_string()
        })?;
    let privilege = match v.get("admin").and_then(|a| a.as_i64()) {
        Some(14) => people::Privilege::Admin,
        Some(0) | None => people::Privilege::User,
        Some(_) => people::Privilege::Manager,
    };
    let card = lines.iter().find_map(|l| match l {
        OperLine::Enrolled {
            pin: p,
            backupnum: Some(11),
            payload,
        } if *p == pin => {
            let mut b = payload.as_bytes().to_vec();
            let v = simd_json::to_owned_value(&mut b).ok()?;
            v.get("record")
                .and_then(|r| r.as_str())
                .filter(|c| c.len() <= people::MAX_CARD)
                .map(str::to_string)
        }
        _ => None,
    });
    let now = crate::time::now_ms();
    Some(people::Person {
        pin,
        name,
        card,
        privilege,
        department: None,
        external_id: None,
        created_at: now,
        updated_at: now,
    })
}

/// Stores an `ATTPHOTO` upload under the key of the punch its file name names (by the clock rule,
/// as `attendance::stage_records` keys the punch), and links it from the punch when that is
/// stored already; a punch stored later links it then (`store_attlog`).
pub async fn store_photo(
    fleet: &Fleet,
    batch: &Batcher,
    dev: &Device,
    photo: &AttPhoto<'_>,
    stamp: Option<(&'static str, &str)>,
) -> Result<(), &'static str> {
    let store = &fleet.store;
    let identity = attendance::identity(photo.pin, &photo.local, None);
    let primary = match store
        .get(Cf::AttendanceDedup, &dedup_key(&dev.id, &identity))
        .map_err(not_stored)?
    {
        Some(k) => <[u8; 32]>::try_from(k.as_slice()).ok(),
        None => None,
    };
    let linked_item = match primary {
        Some(k) => store
            .get(Cf::Attendance, &k)
            .map_err(not_stored)?
            .and_then(|item| with_photo_url(&item, &k))
            .map(|item| (k, item)),
        None => None,
    };
    let primary = match primary {
        Some(k) => k,
        None => {
            let tz = dev.zone().unwrap_or(jiff::tz::TimeZone::UTC);
            let utc_us = photo
                .local
                .to_zoned(tz)
                .map_or(0, |z| z.timestamp().as_microsecond().max(0) as u64);
            attendance::key(&dev.id, utc_us, &identity)
        }
    };
    let mut stamped = Stamped::default();
    let ticket = batch
        .stage(|st| {
            st.put(Cf::Photos, &primary, photo.photo)?;
            if let Some((k, item)) = &linked_item {
                st.put(Cf::Attendance, k, item.as_bytes())?;
            }
            stamped = stage_stamp(st, dev, stamp)?;
            Ok(())
        })
        .map_err(not_stored)?;
    if ticket.wait().await {
        stamped.commit(dev);
        Ok(())
    } else {
        Err(NOT_STORED)
    }
}

/// A stored punch's item with its `photo_url`, or None when it has one already.
fn with_photo_url(item: &[u8], primary: &[u8; 32]) -> Option<String> {
    let item = std::str::from_utf8(item).ok()?;
    if item.contains(",\"photo_url\":") {
        return None;
    }
    let body = item.strip_suffix('}')?;
    Some(format!(
        "{body},\"photo_url\":\"/api/attendance/{}/photo\"}}",
        crate::fleet::auth::hex(primary)
    ))
}

/// Keeps what a terminal says of itself (`info`, a JSON object) in its device's `info`, merged
/// over what it said before (at most `MAX_INFO_FIELDS` fields); written only when it changes, so
/// a poll's `INFO` every few seconds writes nothing new.
pub fn report_info(batch: &Batcher, dev: &Device, info: &str) {
    let merged = dev.with_record(|r| merge_info(r.info.as_deref(), info));
    let Some(merged) = merged else { return };
    dev.update_record(|r| r.info = Some(merged));
    if let Err(e) = batch.stage(|st| records::stage_device(st, &dev.record())) {
        tracing::error!(error = %e, "storing a terminal's info failed");
    }
}

/// `new`'s fields over `old`'s; None when nothing changes.
fn merge_info(old: Option<&str>, new: &str) -> Option<String> {
    let parse = |s: &str| {
        let mut b = s.as_bytes().to_vec();
        simd_json::to_owned_value(&mut b)
            .ok()
            .and_then(|v| match v {
                simd_json::OwnedValue::Object(o) => Some(*o),
                _ => None,
            })
    };
    let mut merged = old.and_then(parse).unwrap_or_default();
    let before = merged.clone();
    for (k, v) in parse(new)? {
        if merged.len() < MAX_INFO_FIELDS || merged.contains_key(&k) {
            merged.insert(k, v);
        }
    }
    (merged != before || old.is_none()).then(|| json::encode(&simd_json::OwnedValue::from(merged)))
}

/// The commands to hand out on a poll, as `(id, line)`: first those whose answer is overdue
/// (`handed_out`), then queued ones in order while the terminal has room, at most
/// `MAX_PER_POLL`. Each new one is recorded `sent`; one the terminal's protocol cannot carry is
/// failed with the reason. `wall` is the terminal's clock (a `fetch_logs` without an end asks up
/// to it). The id is the command's sequence number, which its answer names. Returns once the
/// `sent` statuses are durable: the terminal's answer may come through another shard, and must
/// find the command `sent` and commit after it.
pub async fn hand_out(
    fleet: &Fleet,
    batch: &Batcher,
    dev: &Device,
    now_ms: u64,
    wall: DateTime,
) -> Vec<(String, String)> {
    let store = &fleet.store;
    let mut out = Vec::new();
    let mut sent = None;
    for due in dev.handed_out.overdue(now_ms) {
        let seq = match due {
            Overdue::Again(s) | Overdue::GaveUp(s) => s,
        };
        let cmd = match command_by_seq(fleet, dev, seq) {
            Ok(Some(c)) if c.status == CommandStatus::Sent => c,
            Ok(_) => {
                dev.handed_out.answered(seq);
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "loading a handed-out command failed");
                continue;
            }
        };
        match due {
            Overdue::GaveUp(_) => {
                commands::finish(
                    fleet,
                    batch,
                    cmd,
                    false,
                    Some("{\"error\":\"timeout\"}".into()),
                );
            }
            Overdue::Again(_) if out.len() < MAX_PER_POLL => {
                if let Ok(line) = command::line(&cmd.command, &cmd.payload, wall) {
                    out.push((seq.to_string(), line));
                }
            }
            Overdue::Again(_) => {}
        }
    }
    while out.len() < MAX_PER_POLL && dev.handed_out.has_room() {
        let mut cmd = match commands::take_next(store, &fleet.webhooks, batch, dev, now_ms) {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => {
                tracing::error!(error = %e, "loading queued commands failed");
                break;
            }
        };
        match command::line(&cmd.command, &cmd.payload, wall) {
            Ok(line) => {
                sent = commands::sent(&fleet.webhooks, batch, &mut cmd).or(sent);
                dev.handed_out.add(cmd.seq, now_ms);
                out.push((cmd.seq.to_string(), line));
            }
            Err(reason) => commands::fail(fleet, batch, cmd, &reason),
        }
    }
    // Batches of a shard resolve in order: the last one holds them all. A failed commit leaves
    // the commands handed out all the same (the terminal has them); their answers then find them
    // still `queued` in the store, and are taken as long as they are remembered as handed out.
    if !durable(sent).await {
        tracing::error!("recording handed-out commands as sent failed");
    }
    out
}

fn command_by_seq(
    fleet: &Fleet,
    dev: &Device,
    seq: u64,
) -> Result<Option<records::CommandRecord>, StoreError> {
    let found = records::commands_after(&fleet.store, &dev.id, seq.saturating_sub(1), 1)?;
    Ok(found.into_iter().next().filter(|c| c.seq == seq))
}

/// Records a `devicecmd` body's answers: each names a command by its id; one still `sent` (or
/// handed out, its `sent` lost to a failed commit) becomes `acked` (`Return` 0 or more) or
/// `failed`, with `{"return","cmd",…}` as its result. Answers to commands already answered, or
/// that this device was never handed, change nothing. Returns once
/// what changed is durable: the terminal then forgets its answers.
pub async fn take_answers(
    fleet: &Fleet,
    batch: &Batcher,
    dev: &Device,
    answers: &[crate::zkteco::CmdResult],
) -> Result<(), &'static str> {
    let mut last = None;
    for a in answers {
        let Ok(seq) = a.id.parse::<u64>() else {
            continue;
        };
        let waited = dev.handed_out.answered(seq);
        let cmd = match command_by_seq(fleet, dev, seq) {
            Ok(Some(c)) if c.status == CommandStatus::Sent => c,
            Ok(Some(c)) if waited && c.status == CommandStatus::Queued => c,
            Ok(_) => continue,
            Err(e) => return Err(not_stored(e)),
        };
        let mut result = format!("{{\"return\":{},\"cmd\":", a.code);
        json::push_str(&mut result, &a.cmd);
        if a.fields.len() > 2 {
            result.push_str(",\"fields\":");
            result.push_str(&a.fields);
        }
        result.push('}');
        last = commands::finish(fleet, batch, cmd, a.code >= 0, Some(result)).or(last);
    }
    if durable(last).await {
        Ok(())
    } else {
        Err(NOT_STORED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::provision::{NewDevice, provision};
    use crate::fleet::shard_stub::with_batcher;
    use crate::fleet::test_fleet::fleet;
    use crate::store::disk_guard::MinFree;
    use crate::store::records::{CommandRecord, Protocol};
    use crate::store::temp::TempStore;
    use crate::zkteco::CmdResult;
    use std::sync::Arc;

    async fn terminal(fleet: &Fleet, batcher: &Batcher, serial: &str) -> Arc<Device> {
        let new = NewDevice {
            name: "gate".into(),
            protocol: Protocol::Zkteco,
            serial: Some(serial.into()),
            settings: [("timezone".to_string(), "Asia/Tokyo".to_string())].into(),
            info: None,
        };
        provision(fleet, batcher, new, |_| Ok(()))
            .await
            .expect("provision")
            .0
    }

    fn stored_status(fleet: &Fleet, c: &CommandRecord) -> CommandRecord {
        records::get_command(&fleet.store, &c.command_id)
            .expect("read")
            .expect("the command")
    }

    fn answer(seq: u64, code: i64) -> CmdResult {
        CmdResult {
            id: seq.to_string(),
            code,
            cmd: "DATA".into(),
            fields: "{}".into(),
        }
    }

    /// Kept until answered, where it lives: a poll returns with the commands' `sent` already
    /// durable (their answers may come through another shard), an answer finishes each once, and
    /// a repeated or stray answer changes nothing.
    #[test]
    fn handed_out_commands_are_sent_when_the_poll_returns_and_finish_once() {
        let tmp = TempStore::open("zk-commands", false).expect("store");
        let store = tmp.store().clone();
        let fleet = fleet(&store);
        with_batcher(&store, async |batcher| {
            let dev = terminal(&fleet, batcher, "ZK1").await;
            let enqueue = async |name: &str, payload: &str| {
                commands::enqueue(&fleet, batcher, &dev, name, payload, None)
                    .await
                    .expect("enqueue")
            };
            let a = enqueue("delete_user", r#"{"enrollid":3}"#).await;
            let b = enqueue("reboot", "{}").await;
            let bad = enqueue("opendoor", "{}").await;
            let wall = DateTime::new(2026, 6, 12, 9, 0, 0, 0).expect("time");
            let lines = hand_out(&fleet, batcher, &dev, 1_000, wall).await;
            assert_eq!(
                lines,
                [
                    (a.seq.to_string(), "DATA DELETE USERINFO PIN=3".to_string()),
                    (b.seq.to_string(), "REBOOT".to_string()),
                ]
            );
            assert_eq!(
                stored_status(&fleet, &a).status,
                CommandStatus::Sent,
                "durable before the answer"
            );
            assert_eq!(stored_status(&fleet, &b).status, CommandStatus::Sent);
            let failed = stored_status(&fleet, &bad);
            assert_eq!(
                failed.status,
                CommandStatus::Failed,
                "a command the terminal cannot run"
            );
            assert!(
                hand_out(&fleet, batcher, &dev, 2_000, wall)
                    .await
                    .is_empty()
            );

            take_answers(
                &fleet,
                batcher,
                &dev,
                &[answer(a.seq, 0), answer(b.seq, -1004), answer(999, 0)],
            )
            .await
            .expect("answers stored");
            let done = stored_status(&fleet, &a);
            assert_eq!(done.status, CommandStatus::Acked);
            assert_eq!(done.result.as_deref(), Some(r#"{"return":0,"cmd":"DATA"}"#));
            assert_eq!(stored_status(&fleet, &b).status, CommandStatus::Failed);
            take_answers(&fleet, batcher, &dev, &[answer(a.seq, -1002)])
                .await
                .expect("stored");
            assert_eq!(
                stored_status(&fleet, &a).status,
                CommandStatus::Acked,
                "the first answer stands"
            );
            assert!(dev.handed_out.is_empty());
        });
    }

    /// An unanswered command is handed out again once overdue, with the same id, and fails as
    /// timed out after `MAX_OFFERS`.
    #[test]
    fn an_unanswered_command_comes_back_then_times_out() {
        use crate::fleet::handed_out::{MAX_OFFERS, REOFFER_AFTER_MS};
        let tmp = TempStore::open("zk-reoffer", false).expect("store");
        let store = tmp.store().clone();
        let fleet = fleet(&store);
        with_batcher(&store, async |batcher| {
            let dev = terminal(&fleet, batcher, "ZK2").await;
            let c = commands::enqueue(&fleet, batcher, &dev, "info", "{}", None)
                .await
                .expect("enqueue");
            let wall = DateTime::new(2026, 6, 12, 9, 0, 0, 0).expect("time");
            let mut now = 0;
            let first = hand_out(&fleet, batcher, &dev, now, wall).await;
            for _ in 1..MAX_OFFERS {
                now += REOFFER_AFTER_MS;
                assert_eq!(hand_out(&fleet, batcher, &dev, now, wall).await, first);
            }
            now += REOFFER_AFTER_MS;
            assert!(hand_out(&fleet, batcher, &dev, now, wall).await.is_empty());
            // Its status is staged, not awaited: give the batch its commit.
            batcher.commit(|_| Ok(())).await.expect("commit");
            let gave_up = stored_status(&fleet, &c);
            assert_eq!(gave_up.status, CommandStatus::Failed);
            assert_eq!(gave_up.result.as_deref(), Some(r#"{"error":"timeout"}"#));
        });
    }

    /// A re-send that stores nothing new (a lost answer's batch, perhaps processed after a newer
    /// upload) leaves the stamp where the newer upload put it.
    #[test]
    fn a_stale_resend_does_not_take_the_stamp_back() {
        let tmp = TempStore::open("zk-stale", false).expect("store");
        let store = tmp.store().clone();
        let fleet = fleet(&store);
        let older = b"1\t2026-06-12 09:00:05\t0\t1\r\n";
        let newer = b"2\t2026-06-12 09:01:10\t1\t15\r\n";
        with_batcher(&store, async |batcher| {
            let dev = terminal(&fleet, batcher, "ZK4").await;
            let up = async |body: &[u8], stamp: &str| {
                store_attlog(&fleet, batcher, &dev, body, Some(("ATTLOGStamp", stamp))).await
            };
            assert_eq!(up(older, "40").await, Ok(1));
            assert_eq!(up(newer, "60").await, Ok(1));
            assert_eq!(up(older, "40").await, Ok(1), "still answered as stored");
            let stamp = dev.with_record(|r| r.stamps.get("ATTLOGStamp").cloned());
            assert_eq!(stamp.as_deref(), Some("60"));
            let on_disk = records::load_devices(&fleet.store)
                .expect("devices")
                .into_iter()
                .find(|r| r.device_id == dev.id)
                .expect("the device");
            assert_eq!(
                on_disk.stamps.get("ATTLOGStamp").map(String::as_str),
                Some("60")
            );
        });
    }

    /// Ack after commit, where it lives: an upload the disk refuses is answered as not stored and
    /// leaves neither its punches nor its stamp; sent again, it is stored once, and the stamp
    /// with it.
    #[test]
    fn an_upload_and_its_stamp_commit_together_or_not_at_all() {
        let tmp = TempStore::open("zk-attlog", false).expect("store");
        let store = tmp.store().clone();
        let fleet = fleet(&store);
        let body = b"1\t2026-06-12 09:00:05\t0\t1\r\n2\t2026-06-12 09:01:10\t1\t15\r\n";
        let punches = |dev: &Device| {
            let mut n = 0;
            store
                .scan_forward(
                    Cf::Attendance,
                    &keys::device(&dev.id),
                    None,
                    usize::MAX,
                    |_, _| {
                        n += 1;
                        Ok(true)
                    },
                )
                .expect("scan");
            n
        };
        with_batcher(&store, async |batcher| {
            let dev = terminal(&fleet, batcher, "ZK3").await;
            store
                .guard
                .set_min_free(MinFree::parse("5%").expect("parse"));
            store.guard.observe(0, 100);
            let r = store_attlog(&fleet, batcher, &dev, body, Some(("ATTLOGStamp", "2"))).await;
            assert_eq!(r, Err(NOT_STORED));
            assert_eq!(punches(&dev), 0);
            let on_disk = |fleet: &Fleet| {
                records::load_devices(&fleet.store)
                    .expect("devices")
                    .into_iter()
                    .find(|r| r.device_id == dev.id)
                    .expect("the device")
            };
            assert!(
                on_disk(&fleet).stamps.is_empty(),
                "no stamp ahead of its records"
            );
            store.guard.observe(100, 100);
            for _ in 0..2 {
                let r = store_attlog(&fleet, batcher, &dev, body, Some(("ATTLOGStamp", "2"))).await;
                assert_eq!(r, Ok(2));
            }
            assert_eq!(punches(&dev), 2, "stored once");
            assert_eq!(
                on_disk(&fleet)
                    .stamps
                    .get("ATTLOGStamp")
                    .map(String::as_str),
                Some("2")
            );
        });
    }

    #[test]
    fn info_merges_and_writes_only_when_it_changes() {
        assert_eq!(
            merge_info(None, r#"{"pushver":"2.4.1"}"#).as_deref(),
            Some(r#"{"pushver":"2.4.1"}"#)
        );
        let old = r#"{"pushver":"2.4.1","INFO":"Ver 6.60,3,1,5"}"#;
        assert_eq!(merge_info(Some(old), r#"{"INFO":"Ver 6.60,3,1,5"}"#), None);
        let merged = merge_info(Some(old), r#"{"INFO":"Ver 6.60,4,1,9"}"#).unwrap();
        assert!(merged.contains(r#""INFO":"Ver 6.60,4,1,9""#) && merged.contains("pushver"));
        assert_eq!(merge_info(Some(old), "not json"), None);
    }

    #[test]
    fn a_photo_url_is_added_once() {
        let k = [7u8; 32];
        let item = br#"{"id":"x","enrollid":1}"#;
        let linked = with_photo_url(item, &k).unwrap();
        assert!(linked.ends_with(&format!(
            ",\"photo_url\":\"/api/attendance/{}/photo\"}}",
            crate::fleet::auth::hex(&k)
        )));
        assert_eq!(with_photo_url(linked.as_bytes(), &k), None);
    }

    #[test]
    fn line_identities_tell_tables_and_lines_apart() {
        assert_eq!(line_identity("OPERLOG", "a"), line_identity("OPERLOG", "a"));
        assert_ne!(line_identity("OPERLOG", "a"), line_identity("OPERLOG", "b"));
        assert_ne!(
            line_identity("OPERLOG", "a"),
            line_identity("ERRORLOG", "a")
        );
    }
}
