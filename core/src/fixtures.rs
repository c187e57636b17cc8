//! Sample frames shared by the unit tests and the benchmarks (`benches/`), so that a benchmark
//! measures exactly what the tests show is handled, and a sample corrected in one is corrected in
//! both. Test data only: nothing in the server uses it, so it is hidden from the docs, like
//! [`fuzzing`](crate::fuzzing).

/// AiFace-family JSON terminals.
pub mod aiface {
    /// The `reg` example of protocols.md §3.2, verbatim.
    pub const REG: &str = r#"{
 "cmd": "reg",
 "sn": "ZX0006827500",
 "cpusn": "123456789",
 "devinfo": {
 "modelname": "tfs30",
 "usersize": 3000,
 "fpsize": 3000,
 "cardsize": 3000,
 "pwdsize": 3000,
 "logsize": 100000,
 "useduser": 1000,
 "usedfp": 1000,
 "usedcard": 2000,
 "usedpwd": 400,
 "usedlog": 100000,
 "usednewlog": 5000,
 "fpalgo": "thbio3.0",
 "firmware": "th600w v6.1",
 "time": "2016-03-25 13:49:30",
 "mac": "00-01-A9-01-00-01"
 }
}"#;

    /// A terminal's answer to the backfill's `getnewlog` when it holds no new logs.
    pub const EMPTY_LOG_PAGE: &str =
        r#"{"ret":"getnewlog","result":true,"count":0,"from":0,"to":0,"record":[]}"#;
}

/// SmackBio XML terminals.
pub mod smackbio {
    /// The vendor's `Register`, as an M82 sends it.
    pub const REGISTER: &str = "<?xml version=\"1.0\"?>\n<Message>\n<Request>Register</Request><TerminalType>M82</TerminalType><DeviceSerialNo>M82-0001</DeviceSerialNo><CloudId>cloudid12345678</CloudId>\n</Message>";

    /// A live punch, photo included (the attendance-burst path).
    pub const TIMELOG_V2: &str = "<?xml version=\"1.0\"?>\n<Message>\n<TerminalType>M82</TerminalType><TerminalID>1</TerminalID><DeviceSerialNo>M82-0001</DeviceSerialNo><Event> TimeLog_v2</Event><LogID>24</LogID><UtcTimezoneMinutes>180</UtcTimezoneMinutes><Time>2026-08-29-T08:15:30Z</Time><UserID>42</UserID><Action>FP</Action><AttendStat>Duty On</AttendStat><APStat>None</APStat><JobCode>0</JobCode><Photo>Yes</Photo><LogImage>AAAAAAAA</LogImage><TransID>tx-7</TransID>\n</Message>";

    /// The `Login` of [`REGISTER`]'s terminal with `token`.
    pub fn login(token: &str) -> String {
        format!(
            "<Message><Request>Login</Request><DeviceSerialNo>M82-0001</DeviceSerialNo><Token>{token}</Token></Message>"
        )
    }

    /// A message in the vendor's multi-line layout (`BaseMessage.AppendTag`): `<kind>name</kind>`
    /// (`Request`, `Response` or `Event`), then the fields.
    pub fn vendor(kind: &str, name: &str, fields: &[(&str, &str)]) -> String {
        let mut out = format!("<?xml version=\"1.0\"?>\r\n<Message>\r\n\t<{kind}>{name}</{kind}>");
        for (tag, value) in fields {
            out.push_str(&format!("\r\n\t<{tag}>{value}</{tag}>"));
        }
        out + "\r\n</Message>"
    }
}

/// WebSocket frames.
pub mod ws {
    /// RFC 6455 5.7: a single-frame masked text message "Hello", as a client sends it.
    pub const RFC_MASKED_HELLO: [u8; 11] = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];

    /// RFC 6455 5.7: the same message unmasked, as a server sends it.
    pub const RFC_UNMASKED_HELLO: [u8; 7] = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];

    /// The masking key of [`RFC_MASKED_HELLO`].
    pub const RFC_KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
}
