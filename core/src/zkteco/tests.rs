use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use simd_json::prelude::*;

use super::command::line;
use super::tables::{self, OperLine, PhotoError};
use super::*;
use crate::attendance::{Kind, parse_record};

fn body(r: &Response) -> String {
    String::from_utf8(r.body.clone()).unwrap()
}

#[test]
fn every_path_with_or_without_aspx_and_a_trailing_slash() {
    for (p, want) in [
        ("/iclock/cdata", Ok(Endpoint::Cdata)),
        ("/iclock/cdata.aspx", Ok(Endpoint::Cdata)),
        ("/iclock/getrequest", Ok(Endpoint::GetRequest)),
        ("/iclock/getrequest.aspx", Ok(Endpoint::GetRequest)),
        ("/iclock/devicecmd/", Ok(Endpoint::DeviceCmd)),
        ("/iclock/devicecmd.aspx", Ok(Endpoint::DeviceCmd)),
        ("/iclock/ping", Ok(Endpoint::Ping)),
        ("/iclock/registry", Err(())),
    ] {
        assert_eq!(endpoint(p), Some(want), "{p}");
    }
    assert_eq!(endpoint("/api/devices"), None);
    assert_eq!(endpoint("/iclockcdata"), None);
}

#[test]
fn the_handshake_names_the_serial_and_keeps_the_rest_as_info() {
    let r = read(
        Endpoint::Cdata,
        Method::Get,
        "SN=ZK0001&options=all&pushver=2.4.1&language=69",
        b"",
    )
    .unwrap();
    assert_eq!(r.serial, "ZK0001");
    match r.call {
        Call::Handshake { info } => {
            assert_eq!(info, r#"{"pushver":"2.4.1","language":"69"}"#)
        }
        other => panic!("{other:?}"),
    }
    for bad in [
        "",
        "options=all",
        "SN=",
        "SN=%0A",
        &format!("SN={}", "x".repeat(65)),
    ] {
        let e = read(Endpoint::Cdata, Method::Get, bad, b"").unwrap_err();
        assert_eq!(e.status, 400, "{bad}");
        assert!(body(&e.response()).starts_with("ERROR: SN"), "{bad}");
    }
    let e = read(Endpoint::GetRequest, Method::Post, "SN=A", b"").unwrap_err();
    assert_eq!(e.status, 405);
    let e = read(
        Endpoint::Cdata,
        Method::Post,
        "SN=A",
        b"1\t2026-01-01 00:00:00",
    )
    .unwrap_err();
    assert_eq!(e.status, 400, "an upload without its table");
}

#[test]
fn the_option_block_carries_stored_stamps_and_the_zone() {
    let now: Timestamp = "2026-06-12T07:00:00Z".parse().unwrap();
    let berlin = TimeZone::get("Europe/Berlin").unwrap();
    let stamps = [("ATTLOGStamp", "9999")];
    let r = options_reply(
        "ZK0001",
        &Options {
            stamps: &stamps,
            zone: Some(&berlin),
        },
        now,
    );
    assert_eq!(r.status, 200);
    let text = body(&r);
    let lines: Vec<&str> = text.split("\r\n").collect();
    assert_eq!(lines[0], "GET OPTION FROM: ZK0001");
    for want in [
        "ATTLOGStamp=9999",
        "OPERLOGStamp=None",
        "ATTPHOTOStamp=None",
        "Delay=10",
        "ErrorDelay=30",
        "TimeZone=2",
        "Realtime=1",
    ] {
        assert!(lines.contains(&want), "{want} in {text}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("TransFlag=") && l.contains("AttLog"))
    );
    // Without a configured zone, and with one that is not whole hours, the terminal keeps its own.
    let kolkata = TimeZone::get("Asia/Kolkata").unwrap();
    for zone in [None, Some(&kolkata)] {
        let text = body(&options_reply("Z", &Options { stamps: &[], zone }, now));
        assert!(!text.contains("TimeZone="), "{text}");
    }
}

#[test]
fn answers_are_plain_text_lines() {
    assert_eq!(body(&stored(3)), "OK: 3\r\n");
    assert_eq!(body(&ok()), "OK\r\n");
    let r = commands_reply(&[
        ("7".into(), "REBOOT".into()),
        ("8".into(), "DATA DELETE USERINFO PIN=3".into()),
    ]);
    assert_eq!(body(&r), "C:7:REBOOT\r\nC:8:DATA DELETE USERINFO PIN=3\r\n");
    assert!(
        r.headers
            .iter()
            .any(|(k, v)| *k == "Content-Type" && v.starts_with("text/plain"))
    );
    let t: Timestamp = "2026-06-12T07:05:09Z".parse().unwrap();
    assert_eq!(http_date(t), "Fri, 12 Jun 2026 07:05:09 GMT");
}

#[test]
fn attlog_lines_become_records_the_attendance_store_reads() {
    let upload = b"1\t2026-06-12 09:15:30\t0\t1\t0\t0\t\r\n\
                   0012\t2026-06-12 09:16:00\t255\t15\r\n\
                   \r\n\
                   7\t2026-06-12 09:17:00\t1\t4\t\t\t\n\
                   A7\t2026-06-12 09:18:00\t0\t1\n\
                   8\n\
                   9\t2026-06-12 09:19:00\t0\t1\t3\tx\ty";
    let recs = tables::attlog(upload);
    assert_eq!(recs.len(), 6, "the blank line is skipped");
    let p = parse_record(&recs[0]).unwrap();
    assert_eq!((p.kind, p.enrollid), (Kind::Punch, 1));
    assert_eq!(p.local, DateTime::new(2026, 6, 12, 9, 15, 30, 0).unwrap());
    assert_eq!(
        p.fields,
        r#"{"enrollid":1,"time":"2026-06-12 09:15:30","inout":0,"verifymode":1,"workcode":"0","reserved":["0"]}"#
    );
    // Leading zeros: the number for the registry, the text as sent in the fields.
    let p = parse_record(&recs[1]).unwrap();
    assert_eq!(p.enrollid, 12);
    assert!(p.fields.contains(r#""enrollid":"0012""#), "{}", p.fields);
    assert!(
        p.fields.contains(r#""inout":255"#),
        "state 255 kept as sent"
    );
    // Blank trailing fields are dropped.
    let p = parse_record(&recs[2]).unwrap();
    assert_eq!(
        p.fields,
        r#"{"enrollid":7,"time":"2026-06-12 09:17:00","inout":1,"verifymode":4}"#
    );
    // A PIN that is not a number, and a line without a time, are kept as unreadable records.
    assert!(parse_record(&recs[3]).is_err());
    assert!(parse_record(&recs[4]).is_err());
    assert_eq!(tables::count_lines(upload), 6);
    let p = parse_record(&recs[5]).unwrap();
    assert!(
        p.fields
            .ends_with(r#""workcode":"3","reserved":["x","y"]}"#),
        "{}",
        p.fields
    );
    // The same punch re-sent is the same punch.
    let again = tables::attlog(b"1\t2026-06-12 09:15:30\t0\t1\t0\n");
    assert_eq!(
        parse_record(&again[0]).unwrap().identity(),
        parse_record(&recs[0]).unwrap().identity()
    );
}

#[test]
fn operlog_users_and_credentials_map_onto_the_registry() {
    let upload = "USER PIN=7\tName=Ann Lee\tPri=14\tPasswd=1234\tCard=99887766\tGrp=1\tTZ=0000000100000000\r\n\
                  FP PIN=7\tFID=3\tSize=8\tValid=1\tTMP=QUJDRA==\r\n\
                  FACE PIN=7\tFID=0\tSIZE=8\tVALID=1\tTMP=RkFDRQ==\n\
                  USERPIC PIN=7\tFileName=7.jpg\tSize=4\tContent=UElDVA==\n\
                  BIODATA Pin=7\tNo=2\tIndex=0\tValid=1\tDuress=0\tType=1\tMajorVer=10\tMinorVer=0\tFormat=0\tTmp=QklP\n\
                  OPLOG 4\t0\t2026-06-12 09:00:00\t0\t0\t0\t0\n\
                  USER PIN=0\tName=nobody\n\
                  FP PIN=7\tFID=12\tTMP=x\n\
                  WHATEVER a=b\n";
    let lines = tables::operlog(upload.as_bytes());
    let enrolled: Vec<(u64, Option<u8>)> = lines
        .iter()
        .filter_map(|l| match l {
            OperLine::Enrolled { pin, backupnum, .. } => Some((*pin, *backupnum)),
            _ => None,
        })
        .collect();
    assert_eq!(
        enrolled,
        [
            (7, None),
            (7, Some(10)),
            (7, Some(11)),
            (7, Some(3)),
            (7, Some(20)),
            (7, Some(50)),
            (7, Some(2))
        ]
    );
    match &lines[0] {
        OperLine::Enrolled { payload, .. } => assert_eq!(
            payload,
            r#"{"enrollid":7,"name":"Ann Lee","admin":14,"group":"1","timezones":"0000000100000000"}"#
        ),
        other => panic!("{other:?}"),
    }
    match &lines[3] {
        OperLine::Enrolled { payload, .. } => {
            assert_eq!(
                payload,
                r#"{"enrollid":7,"backupnum":3,"fid":"3","size":"8","valid":"1","record":"QUJDRA=="}"#
            )
        }
        other => panic!("{other:?}"),
    }
    match &lines[7] {
        OperLine::Operation { payload, .. } => assert_eq!(
            payload,
            r#"{"code":"4","admin":"0","time":"2026-06-12 09:00:00","fields":["0","0","0","0"]}"#
        ),
        other => panic!("{other:?}"),
    }
    // PIN 0, finger 12 and an unknown kind: kept as they came.
    let unread: Vec<&str> = lines
        .iter()
        .filter_map(|l| match l {
            OperLine::Unread { line } => Some(line.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        unread,
        [
            "USER PIN=0\tName=nobody",
            "FP PIN=7\tFID=12\tTMP=x",
            "WHATEVER a=b"
        ]
    );
    for l in &lines {
        if let OperLine::Enrolled { payload, .. } | OperLine::Operation { payload, .. } = l {
            let mut b = payload.clone().into_bytes();
            assert!(simd_json::to_owned_value(&mut b).is_ok(), "{payload}");
        }
    }
}

#[test]
fn attphoto_names_its_punch_in_the_file_name() {
    let mut upload = b"PIN=20260612091530-7.jpg\nSN=ZK0001\nsize=4\nCMD=uploadphoto\0".to_vec();
    upload.extend_from_slice(&[0xff, 0xd8, 0x00, 0xd9]);
    let p = tables::attphoto(&upload).unwrap();
    assert_eq!(p.pin, 7);
    assert_eq!(p.local, DateTime::new(2026, 6, 12, 9, 15, 30, 0).unwrap());
    assert_eq!(p.photo, [0xff, 0xd8, 0x00, 0xd9]);
    for bad in [
        &b"PIN=7.jpg\n\0x"[..],
        b"PIN=2026061209153-7.jpg\n\0x",
        b"no header at all",
        b"SN=1\n\0x",
    ] {
        assert_eq!(tables::attphoto(bad), Err(PhotoError::Unnamed), "{bad:?}");
    }
    let mut big = b"PIN=20260612091530-7.jpg\n\0".to_vec();
    big.resize(big.len() + crate::attendance::MAX_PHOTO + 1, 1);
    assert_eq!(tables::attphoto(&big), Err(PhotoError::TooLarge));
}

#[test]
fn the_terminals_own_report_is_kept_as_info() {
    let info =
        tables::options(b"~DeviceName=SpeedFace-V5L,MAC=00:17:61:12:34:56\r\nFWVersion=Ver 6.60\n");
    assert_eq!(
        info,
        r#"{"~DeviceName":"SpeedFace-V5L","MAC":"00:17:61:12:34:56","FWVersion":"Ver 6.60"}"#
    );
}

#[test]
fn devicecmd_answers_batched_crlf_or_lf() {
    let r = read(
        Endpoint::DeviceCmd,
        Method::Post,
        "SN=ZK0001",
        b"ID=7&Return=0&CMD=REBOOT\r\nID=8&Return=-1004&CMD=DATA\nnoise\nID=&Return=0\nID=9&Return=x\nID=10&Return=3&CMD=DATA&Count=3\n",
    )
    .unwrap();
    match r.call {
        Call::Results(rs) => {
            let got: Vec<(&str, i64, &str)> = rs
                .iter()
                .map(|r| (r.id.as_str(), r.code, r.cmd.as_str()))
                .collect();
            assert_eq!(
                got,
                [("7", 0, "REBOOT"), ("8", -1004, "DATA"), ("10", 3, "DATA")]
            );
            assert_eq!(rs[2].fields, r#"{"Count":"3"}"#);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn uploads_keep_their_table_and_stamp() {
    let r = read(
        Endpoint::Cdata,
        Method::Post,
        "SN=Z&table=attlog&Stamp=9999",
        b"x",
    )
    .unwrap();
    match r.call {
        Call::Upload { table, stamp, body } => {
            assert_eq!(table, Table::Attlog);
            assert_eq!(stamp.as_deref(), Some("9999"));
            assert_eq!(body, b"x");
        }
        other => panic!("{other:?}"),
    }
    let r = read(
        Endpoint::Cdata,
        Method::Post,
        "SN=Z&table=BIODATA&Stamp=a%20b",
        b"",
    )
    .unwrap();
    match r.call {
        Call::Upload { table, stamp, .. } => {
            assert_eq!(table, Table::Other("BIODATA".into()));
            assert_eq!(stamp, None, "a stamp with a space is not echoed back");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn commands_become_adms_lines() {
    let now = DateTime::new(2026, 6, 12, 9, 0, 0, 0).unwrap();
    for (name, payload, want) in [
        ("reboot", "{}", "REBOOT"),
        ("REBOOT", "", "REBOOT"),
        ("info", "{}", "INFO"),
        ("check", "{}", "CHECK"),
        (
            "delete_user",
            r#"{"enrollid":7}"#,
            "DATA DELETE USERINFO PIN=7",
        ),
        (
            "delete_user",
            r#"{"pin":"7"}"#,
            "DATA DELETE USERINFO PIN=7",
        ),
        ("get_users", "{}", "DATA QUERY USERINFO"),
        (
            "get_users",
            r#"{"enrollid":3}"#,
            "DATA QUERY USERINFO PIN=3",
        ),
        (
            "set_user",
            r#"{"enrollid":7,"name":"Ann Lee","admin":14,"card":"99887766","password":"1234"}"#,
            "DATA UPDATE USERINFO PIN=7\tName=Ann Lee\tPri=14\tPasswd=1234\tCard=99887766\tGrp=1",
        ),
        (
            "set_user",
            r#"{"enrollid":8}"#,
            "DATA UPDATE USERINFO PIN=8\tName=\tPri=0\tPasswd=\tCard=\tGrp=1",
        ),
        (
            "fetch_logs",
            r#"{"start":"2026-06-01 00:00:00"}"#,
            "DATA QUERY ATTLOG StartTime=2026-06-01 00:00:00\tEndTime=2026-06-12 09:00:00",
        ),
        (
            "fetch_logs",
            "{}",
            "DATA QUERY ATTLOG StartTime=2000-01-01 00:00:00\tEndTime=2026-06-12 09:00:00",
        ),
        ("clear_log", r#"{"confirm":true}"#, "CLEAR LOG"),
        (
            "raw",
            r#"{"command":"DATA QUERY USERINFO PIN=1"}"#,
            "DATA QUERY USERINFO PIN=1",
        ),
    ] {
        assert_eq!(
            line(name, payload, now).as_deref(),
            Ok(want),
            "{name} {payload}"
        );
    }
    for (name, payload, says) in [
        ("set_user", r#"{"name":"x"}"#, "enrollid"),
        ("set_user", r#"{"enrollid":0}"#, "enrollid"),
        ("set_user", r#"{"enrollid":1,"name":"a\tb"}"#, "tabs"),
        ("set_user", r#"{"enrollid":1,"admin":15}"#, "privilege"),
        ("set_user", r#"{"enrollid":1,"group":0}"#, "group"),
        ("fetch_logs", r#"{"start":"yesterday"}"#, "terminal's clock"),
        (
            "fetch_logs",
            r#"{"start":"2026-06-01T00:00:00Z"}"#,
            "terminal's clock",
        ),
        ("clear_log", "{}", "confirm"),
        (
            "raw",
            r#"{"command":"REBOOT\r\nC:9:CLEAR LOG"}"#,
            "one line",
        ),
        ("raw", "{}", "`raw` takes"),
        ("set_time", "{}", "HTTP Date"),
        ("opendoor", "{}", "do not know `opendoor`"),
        ("reboot", "[1]", "object"),
        ("reboot", "{", "JSON"),
    ] {
        let e = line(name, payload, now).unwrap_err();
        assert!(e.contains(says), "{name} {payload}: {e}");
    }
}
