#!/usr/bin/env python3
"""Writes fuzz/seeds/<target>/ (and fuzz/dicts/<target>.dict) from the protocol transcripts (the frames of the transcript tests in
core/src/{aiface,smackbio}/tests.rs and the examples in the protocol reference). The output is
committed; re-run after changing this file: python3 fuzz/gen_seeds.py

Input shapes are those of fleetgate_core::fuzzing (core/src/fuzzing.rs): conversations are steps
separated by NUL bytes (T = time passes, I = identity answers, C = operator command, anything else =
a frame); ws_frame is 2 bytes of message limit, 1 byte of chunking, then client bytes; http_response
is 1 byte of flags (bit 0 HEAD, bit 1 tight limits, the rest the read size), then server bytes."""

import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "seeds")

seeds = {}


def seed(target, name, data):
    if isinstance(data, str):
        data = data.encode()
    seeds.setdefault(target, {})[name] = data


def steps(*parts):
    return b"\0".join(p.encode() if isinstance(p, str) else p for p in parts)


def tick(secs):
    return b"T" + struct.pack(">H", secs)


# --- HTTP requests -------------------------------------------------------------------------------
seed("http_request", "get", "GET /api/devices?limit=10&after=abc HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer x\r\n\r\n")
seed("http_request", "post_body", "POST /api/device-http HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 38\r\n\r\n{\"cmd\":\"checklive\",\"sn\":\"ZX0006827500\"}")
seed("http_request", "pipelined", "GET /a HTTP/1.1\r\n\r\nGET /b%20c HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
seed("http_request", "expect", "POST /x HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
seed("http_request", "chunked", "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
seed("http_request", "upgrade", "GET /ws HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")

# --- HTTP responses (the client's end) -----------------------------------------------------------


def response(flags, *parts):
    return bytes([flags]) + b"".join(p.encode() if isinstance(p, str) else p for p in parts)


ERROR_BODY = '{"error":{"code":"payload_too_large","message":"request body too large"}}'
seed("http_response", "keep_alive", response(3 << 2, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\nConnection: keep-alive\r\n\r\n{\"ok\":true}", "HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n"))
seed("http_response", "chunked_csv", response(1 << 2, "HTTP/1.1 200 OK\r\nContent-Type: text/csv; charset=utf-8\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n9;x=1\r\ndevice_id\r\n5\r\n,sn\r\n\r\n0\r\nX-Trailer: t\r\n\r\n"))
seed("http_response", "until_close", response(7 << 2, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nstreamed until close"))
seed("http_response", "head", response(1 | 5 << 2, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"))
seed("http_response", "upgrade", response(2 | 2 << 2, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x02hi"))
seed("http_response", "error_close", response(2 | 9 << 2, f"HTTP/1.1 413 Content Too Large\r\nContent-Type: application/json\r\nContent-Length: {len(ERROR_BODY)}\r\nConnection: close\r\n\r\n{ERROR_BODY}"))

# --- WebSocket frames ----------------------------------------------------------------------------


def client_frame(opcode, payload, fin=True, key=b"\x37\xfa\x21\x3d"):
    if isinstance(payload, str):
        payload = payload.encode()
    out = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n <= 125:
        out += bytes([0x80 | n])
    elif n <= 0xFFFF:
        out += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        out += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return out + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def ws(limit, chunking, *frames):
    return struct.pack(">H", limit) + bytes([chunking]) + b"".join(frames)


reg = '{"type":"register","device_id":"d1","token":"t"}'
seed("ws_frame", "text", ws(4096, 1, client_frame(1, reg)))
seed("ws_frame", "fragmented", ws(4096, 3, client_frame(1, "Hel", fin=False), client_frame(9, "ping"), client_frame(0, "lo", fin=True)))
seed("ws_frame", "binary_close", ws(300, 2, client_frame(2, bytes(range(200))), client_frame(8, struct.pack(">H", 1000) + b"bye")))
seed("ws_frame", "len16", ws(1000, 0, client_frame(1, "x" * 300)))
seed("ws_frame", "too_big", ws(10, 5, client_frame(1, "x" * 300)))
seed("ws_frame", "pong_then_text", ws(64, 9, client_frame(10, ""), client_frame(1, "{}")))

# --- WebSocket handshake -------------------------------------------------------------------------
seed("ws_handshake", "rfc6455", "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n")
seed("ws_handshake", "no_version", "GET /ws HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
seed("ws_handshake", "raw_lines", "GET\r\nhost: a\r\nupgrade: WebSocket\r\nconnection: keep-alive, upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: AAAAAAAAAAAAAAAAAAAAAA==")
seed("ws_handshake", "post", "POST\r\nHost: a\r\nUpgrade: websocket")

# --- Generic protocol (docs/protocol.md) ---------------------------------------------------------
for name, text in {
    "register": reg,
    "subscribe": '{"type":"subscribe","role":"admin","token":"adm"}',
    "telemetry": '{"type":"telemetry","payload":{"temp":21.5,"door":"open"},"ts":"2026-06-12T07:00:00Z","msg_id":"m-1"}',
    "telemetry_int_id": '{"type":"telemetry","device_id":"d1","payload":{"a":[1,2,{"b":null}]},"msg_id":42}',
    "event": '{"type":"event","event_type":"door_forced","payload":{"door":1},"msg_id":"e-1"}',
    "ping": '{"type":"ping"}',
    "pong": '{"type":"pong"}',
    "command_result": '{"type":"command_result","command_id":"c1","status":"ok","payload":{"done":true}}',
    "command": '{"type":"command","device_id":"d1","command":"reboot","payload":{},"ttl_s":60}',
    "unknown": '{"type":"nope"}',
    "escapes": '{"type":"event","event_type":"\\u00e9\\n\\"x","device_id":"a\\\\b"}',
}.items():
    seed("generic", name, text)

# --- AiFace (protocols.md §3; core/src/aiface/tests.rs) --------------------------------------------
AF_REG = '{\n "cmd": "reg",\n "sn": "ZX0006827500",\n "cpusn": "123456789",\n "devinfo": {\n "modelname": "tfs30",\n "usersize": 3000,\n "fpsize": 3000,\n "cardsize": 3000,\n "pwdsize": 3000,\n "logsize": 100000,\n "useduser": 1000,\n "usedfp": 1000,\n "usedcard": 2000,\n "usedpwd": 400,\n "usedlog": 100000,\n "usednewlog": 5000,\n "fpalgo": "thbio3.0",\n "firmware": "th600w v6.1",\n "time": "2016-03-25 13:49:30",\n "mac": "00-01-A9-01-00-01"\n }\n}'
AF_SENDLOG = '{\n "cmd": "sendlog",\n "sn": "zx12345678",\n "count": 2,\n "logindex": 10,\n "record": [\n { "enrollid": 1, "time": "2016-03-25 13:49:30", "mode": 0, "inout": 0, "event": 0, "temp": 36.5, "verifymode": 13, "image": "gesg524hgd" },\n { "enrollid": 2, "time": "2016-03-25 13:49:30", "mode": 0, "inout": 0, "event": 1, "verifymode": 13, "temp": 36.5, "image": "gesg524hgd" }\n ]\n}'
AF_EMPTY_PAGE = '{"ret":"getnewlog","result":true,"count":0,"from":0,"to":0,"record":[]}'
AF_PAGE1 = '{"ret":"getnewlog","result":true,"count":3,"from":1,"to":2,"record":[{"userid":1,"time":"2026-06-12 08:00:00"},{"enrollid":2,"time":"2026-06-12 08:01:00"},]}'
AF_PAGE2 = '{"ret":"getnewlog","result":true,"count":3,"from":3,"to":3,"record":[{"enrollid":3,"time":"2026-06-12 08:02:00"}]}'
seed("aiface", "reg_backfill_sendlog", steps(AF_REG, AF_EMPTY_PAGE, AF_SENDLOG, '{"cmd":"heartbeat","sn":"ZX0006827500"}'))
seed("aiface", "paged_backfill", steps(AF_REG, AF_PAGE1, AF_SENDLOG, AF_PAGE2))
seed("aiface", "refused_then_known", steps("IU", AF_REG, "IK", AF_REG, AF_EMPTY_PAGE))
seed("aiface", "firmware_quirks", steps(AF_REG, AF_EMPTY_PAGE,
     '{"cmd":"sendlog","sn":"ZX0006827500","count":2,"logindex":"7","records":[{"userid":5,"time":"2026-06-12 08:59:00","mode":8,},{"userid":"6","enrollid":6,"time":"2026-06-12 08:59:30",},],}',
     '{"cmd":"sendlog","count":1,"logindex":11,"record":[{"enrollid":0,"time":"2026-06-12 08:59:00","mode":0,"inout":1,"event":"UI_MGLOG_OPENED"}]}',
     '{"cmd":"sendlog","count":1,"logindex":12,"record":[{"enrollid":99999999,"time":"2026-06-12 08:59:10","mode":8,"inout":0,"event":2,"image":"/9j/4AAQSkZJRg=="}]}',
     '{ "cmd": "senduser", "enrollid": 1, "name": "chingzou", "backupnum": 0, "admin": 0, "record": "kajgksjgaglas" }',
     '{"cmd":"senduser","userid":"12","name":"chingzou","backupnum":11,"admin":0,"record":2352253,}',
     '{ "cmd": "sendqrcode", "sn": "AI07F123456", "record": "123456" }'))
seed("aiface", "commands", steps(AF_REG, AF_EMPTY_PAGE,
     'Copen_door {"door":1}', '{"ret":"opendoor","result":true}',
     'Cget_users {}', '{"ret":"getuserlist","result":true,"count":2,"from":0,"to":1,"record":[{"enrollid":1,"admin":0,"backupnum":0},{"enrollid":2,"admin":1,"backupnum":11}]}',
     '{"ret":"getuserlist","result":true,"count":0,"from":0,"to":0,"record":[]}',
     'Cset_time {"time":"2026-01-02 03:04:05"}',
     'Cset_user {"record":"1234","admin":1,"backupnum":10,"name":"Zo\u00eb","enrollid":7}', tick(1),
     'Cdelete_user {"enrollid":7}', tick(6),
     'Cfetch_logs {"all":true,"from":"2018-11-1","to":"2018-12-30"}',
     '{"ret":"getalllog","result":true,"count":3,"from":0,"to":1,"record":[{"enrollid":1,"time":"2018-11-02 08:00:00","mode":0,"inout":0,"event":0},{"enrollid":2,"time":"2018-11-02 08:01:00","mode":0,"inout":0,"event":0}]}',
     '{"cmd":"getalllog","count":3,"from":2,"to":3,"record":[{"enrollid":1,"time":"2018-11-02 08:00:00"}]}',
     'Craw {"cmd":"getdevinfo"}', '{"ret":"getdevinfo","result":true,"deviceid":1}',
     'Ccleanlog {"confirm":true}', '{"ret":"cleanlog","result":false,"reason":1}',
     'Creboot {}'))
seed("aiface", "timeout", steps(AF_REG, tick(10), 'Copen_door {"door":1}', tick(4), tick(2), '{"ret":"opendoor","result":true}'))

# --- SmackBio (protocols.md §2; core/src/smackbio/tests.rs) ---------------------------------------
SB_REGISTER = '<?xml version="1.0"?>\n<Message>\n<Request>Register</Request><TerminalType>M82</TerminalType><DeviceSerialNo>M82-0001</DeviceSerialNo><CloudId>cloudid12345678</CloudId>\n</Message>'
SB_TOKEN = "d013f876-9104-4f94-add0-95c6b9faa1d0"
SB_LOGIN = f"<Message><Request>Login</Request><DeviceSerialNo>M82-0001</DeviceSerialNo><Token>{SB_TOKEN}</Token></Message>"
SB_TIMELOG = '<?xml version="1.0"?>\n<Message>\n<TerminalType>M82</TerminalType><TerminalID>1</TerminalID><DeviceSerialNo>M82-0001</DeviceSerialNo><Event> TimeLog_v2</Event><LogID>24</LogID><UtcTimezoneMinutes>180</UtcTimezoneMinutes><Time>2026-08-29-T08:15:30Z</Time><UserID>42</UserID><Action>FP</Action><AttendStat>Duty On</AttendStat><APStat>None</APStat><JobCode>0</JobCode><Photo>Yes</Photo><LogImage>AAAAAAAA</LogImage><TransID>tx-7</TransID>\n</Message>'


def vendor(kind, name, fields=()):
    out = f'<?xml version="1.0"?>\r\n<Message>\r\n\t<{kind}>{name}</{kind}>'
    for tag, value in fields:
        out += f"\r\n\t<{tag}>{value}</{tag}>"
    return out + "\r\n</Message>"


seed("smackbio", "register_login_timelog", steps(SB_REGISTER, SB_LOGIN, vendor("Response", "SetTime", [("Result", "OK")]), SB_TIMELOG,
     "<Message><DeviceSerialNo>M82-0001</DeviceSerialNo><Event>KeepAlive</Event><DevTime>2026-08-29-T08:00:00Z</DevTime></Message>"))
seed("smackbio", "events", steps(SB_REGISTER, SB_LOGIN, tick(6),
     "<Message>\r\n\t<Event>\tTimeLog_v2 </Event>\r\n\t<UserID> 0042 </UserID>\r\n\t<Time> 2026-9-6-T8:55:20Z </Time>\r\n\t<BodyTemperature100>3655</BodyTemperature100>\r\n\t<TransID> t1 </TransID>\r\n</Message>",
     "<Message><Event>TimeLog_v2</Event><UserID>13838</UserID><UserID_Base36>AB2</UserID_Base36><Time>yesterday</Time><TransID>1</TransID></Message>",
     "<Message><Event>TimeLog</Event><UserID>1</UserID><Time>2026-08-29-T08:00:00Z</Time></Message>",
     "<Message><DeviceSerialNo>M82-0001</DeviceSerialNo><Event>AdminLog_v2</Event><LogID>3</LogID><AdminID>1</AdminID><UserID>42</UserID><Action>EnrollFace</Action><TransID>a-1</TransID></Message>",
     "<Message><Event>AdminLog</Event><Action>SetPWD</Action></Message>",
     "<Message><Event>OpLog_v2</Event><TransID>1</TransID></Message>"))
seed("smackbio", "backfill", steps(SB_REGISTER, SB_LOGIN, vendor("Response", "SetTime", [("Result", "OK")]),
     "<Message><Response>GetFirstGlog</Response><LogID>99</LogID><Time>2026-08-01-T08:59:00Z</Time><UserID>7</UserID><Action>Face</Action><Result>OK</Result></Message>",
     "<Message><Response>GetNextGlog</Response><LogID>100</LogID><Time>2026-08-01-T09:00:00Z</Time><UserID>7</UserID><Action>Face</Action><AttendStat>Duty On</AttendStat><APStat>None</APStat><JobCode>0</JobCode><Photo>No</Photo><Result>OK</Result></Message>",
     "<Message><Response>GetNextGlog</Response><Result>Fail</Result></Message>"))
seed("smackbio", "f500_unknown_then_known", steps("IU",
     "<Message><Request>Register</Request><TerminalType>F500</TerminalType><ProductName>BioFace</ProductName><DeviceSerialNo>DJ20250307014</DeviceSerialNo></Message>",
     "IK", "<Message><Reuqest>Register</Request><DeviceSerialNo>M82-0001</DeviceSerialNo></Message>",
     "<Message><Request>Login</Request><DeviceSerialNo>M82-0001</DeviceSerialNo><Token/></Message>"))
seed("smackbio", "dashboard_dialect", steps(
     "<Request>\n  <Operation>Register</Operation>\n  <DeviceSerialNo>FK628001</DeviceSerialNo>\n  <CloudId>cloud_001</CloudId>\n</Request>",
     "<Response><Operation>SetTime</Operation><Result>success</Result></Response>",
     "<Response><Operation>GetFirstGlog</Operation><Result>fail</Result></Response>",
     "<Request><Operation>TimeLog_v2</Operation><LogId>77</LogId><DeviceSerialNo>FK628001</DeviceSerialNo><UserID>5</UserID><Time>2026-08-29-T07:59:00Z</Time></Request>",
     "<Request><Operation>KeepAlive</Operation><DevTime>2026-08-29-T07:59:59Z</DevTime></Request>",
     'Copen_door {}', "<Response><Operation>LockControl</Operation><Result>success</Result></Response>"))
seed("smackbio", "commands", steps(SB_REGISTER, SB_LOGIN, vendor("Response", "SetTime", [("Result", "OK")]),
     "<Message><Response>GetFirstGlog</Response><Result>Fail</Result></Message>",
     'Copen_door {}', vendor("Response", "SetDoorStatus", [("Result", "OK")]),
     'Creboot {}', tick(6),
     'Cget_users {}', vendor("Response", "GetFirstUserData", [("Result", "OK"), ("UserID", "1"), ("Name", "A")]),
     vendor("Response", "GetNextUserData", [("Result", "Fail")]),
     'Cset_time {"time":"2026-01-02 03:04:05"}', vendor("Response", "SetTime", [("Result", "OK")]),
     'Craw {"message":"<Message><Request>GetDeviceInfo</Request></Message>"}', tick(10)))

# --- HTTP devices (protocols.md §4.1; tests/http_devices.rs) --------------------------------------
for name, text in {
    "reg": '{"cmd":"reg","sn":"ZX0006827500","cpusn":"123456789","devinfo":{"modelname":"tfs30","firmware":"th600w v6.1","usersize":3000}}',
    "sendlog": AF_SENDLOG.replace("gesg524hgd", "aGk="),
    "sendlog_quirks": '{"cmd":"sendlog","sn":12345,"records":[{"userid":"7","time":"2026-6-12 9:15:30","event":"2",},{"enrollid":0,"time":"2026-06-12T09:15:30.123456Z"},{"enrollid":99999999,"time":"2026-06-12 09:15:30","utc_offset_minutes":480},{"time":"soon"},5,],}',
    "checklive": '{"cmd":"checklive","sn":" ZX0006827500 "}',
    "unknown_cmd": '{"cmd":"getuser","sn":"x"}',
    "no_sn": '{"cmd":"reg"}',
}.items():
    seed("device_http", name, text)

# --- ZKTeco ADMS (protocols.md §4.2; core/src/zkteco/tests.rs, tests/zkteco.rs) -----------------
# First byte: 0 cdata (GET, or POST with bit 4: 4), 1 getrequest, 2 devicecmd, 3 ping; 8 and up a
# command (name NUL payload). Then the query, NUL, the body.
ZK_PHOTO = b"PIN=20260612091530-7.jpg\nSN=ZK0001\nsize=4\nCMD=uploadphoto\0\xff\xd8\x00\xd9"
for name, data in {
    "handshake": b"\x00SN=ZK0001&options=all&pushver=2.4.1&language=69",
    "attlog": b"\x04SN=ZK0001&table=ATTLOG&Stamp=9999\x001\t2026-06-12 09:15:30\t0\t1\t0\t0\t\r\n0012\t2026-06-12 09:16:00\t255\t15\r\n\r\nA7\t2026-06-12 09:18:00\n8\n",
    "operlog": b"\x04SN=ZK0001&table=OPERLOG&Stamp=1\x00USER PIN=7\tName=Ann Lee\tPri=14\tPasswd=1234\tCard=99887766\tGrp=1\r\nFP PIN=7\tFID=3\tSize=8\tValid=1\tTMP=QUJDRA==\nFACE PIN=7\tFID=0\tTMP=x\nUSERPIC PIN=7\tContent=UElDVA==\nBIODATA Pin=7\tNo=2\tType=1\tTmp=QklP\nOPLOG 4\t0\t2026-06-12 09:00:00\t0\t0\t0\t0\nWHATEVER a=b\n",
    "attphoto": b"\x04SN=ZK0001&table=ATTPHOTO&Stamp=2\x00" + ZK_PHOTO,
    "options": b"\x04SN=ZK0001&table=options\x00~DeviceName=SpeedFace-V5L,MAC=00:17:61:12:34:56\r\nFWVersion=Ver 6.60\n",
    "poll": b"\x01SN=ZK0001&INFO=Ver%206.60,3,1,5,127.0.0.1",
    "devicecmd": b"\x02SN=ZK0001\x00ID=7&Return=0&CMD=REBOOT\r\nID=8&Return=-1004&CMD=DATA\nID=10&Return=3&CMD=DATA&Count=3\n",
    "ping_wrong_method": b"\x07SN=ZK0001",
    "no_sn": b"\x00options=all",
    "cmd_set_user": b'\x08set_user\x00{"enrollid":7,"name":"Ann Lee","admin":14,"card":"99887766","password":"1234"}',
    "cmd_fetch_logs": b'\x08fetch_logs\x00{"start":"2026-06-01 00:00:00","end":"2026-06-12 09:00:00"}',
    "cmd_raw": b'\x08raw\x00{"command":"DATA QUERY USERINFO PIN=1"}',
}.items():
    seed("zkteco", name, data)

# --- Dictionaries (libFuzzer -dict): the words each protocol is made of ---------------------------
AF_WORDS = "access admin all backupnum cleanadmin cleanlog cleanuser cloudtime cmd confirm count cpusn deleteuser delete_user devinfo door enableuser enflag enrollid event fetch_logs firmware from get_users getalllog getdevinfo getnewlog gettime getuserinfo getuserlist heartbeat image inout logindex mode modelname name nosenduser open_door opendoor raw reason reboot record records reg result ret sendlog sendqrcode senduser set_time set_user settime setuserinfo sn stn time to userid verifymode".split()
SB_TAGS = "APStat Action AdminLog AdminLog_v2 AttendStat BeginLogPos CloudId DevTime DeviceSerialNo Event GetFirstGlog GetFirstUserData GetNextGlog GetNextUserDataExt GetUserData JobCode KeepAlive LockControl LogID LogId LogImage Login Message Mode Name OpLog_v2 Operation Photo Privilege ProductName Register Request Response Restart Result ServerTime Session SetTime SetUserData TerminalID TerminalType Time TimeLog TimeLog_v2 Token TransID UserID UserID_Base36 UtcTimezoneMinutes".split()
GENERIC_WORDS = "type register device_id token subscribe role admin telemetry payload ts msg_id event event_type ping pong command_result command_id status ok error command ttl_s".split()
HTTP_WORDS = ["GET ", "POST ", "HTTP/1.1", "HTTP/1.0", "\r\n", "\r\n\r\n", "Host: ", "Content-Length: ", "Transfer-Encoding: chunked", "Connection: ", "keep-alive", "close", "Upgrade", "websocket", "Expect: 100-continue", "Sec-WebSocket-Key: ", "Sec-WebSocket-Version: 13", "%2F", "%00", "?"]
JSON_PUNCT = ['{', '}', '[', ']', ':', ',', '"', '\\u00', 'null', 'true', 'false', '-1', '1e400', '18446744073709551616']


def dict_escape(word):
    """A dictionary entry's text: backslash, quote and non-printable bytes escaped."""
    out = ""
    for b in word.encode():
        c = chr(b)
        out += "\\" + c if c in '\\"' else c if 32 <= b < 127 else f"\\x{b:02X}"
    return out


dicts = {
    "aiface": [f'"{w}"' for w in AF_WORDS] + ['2026-06-12 09:00:00', 'CONFIRM'] + JSON_PUNCT + ['\0T\0\x10', '\0IU', '\0IK', '\0C'],
    "device_http": [f'"{w}"' for w in AF_WORDS + ["checklive", "utc_offset_minutes"]] + ['2026-06-12T09:15:30Z', '2026-6-1 8:5:3', '.123456789', '+08:00'] + JSON_PUNCT,
    "generic": [f'"{w}"' for w in GENERIC_WORDS] + JSON_PUNCT,
    "zkteco": ["SN=", "&table=", "ATTLOG", "OPERLOG", "ATTPHOTO", "options", "&Stamp=", "INFO=", "\t", "\r\n", "\0", "USER PIN=", "FP PIN=", "FACE PIN=", "USERPIC PIN=", "BIODATA Pin=", "OPLOG ", "Name=", "Pri=", "Passwd=", "Card=", "FID=", "TMP=", "Type=", "No=", "ID=", "&Return=", "&CMD=", "CMD=uploadphoto", ".jpg", "2026-06-12 09:15:30", "20260612091530-", "reboot", "set_user", "delete_user", "get_users", "fetch_logs", "clear_log", "raw", "enrollid", "confirm", "command", "start", "end"] + JSON_PUNCT,
    "smackbio": [f"<{t}>" for t in SB_TAGS] + [f"</{t}>" for t in SB_TAGS] + ['<?xml version="1.0"?>', '&amp;', '&#x41;', '<![CDATA[', ']]>', '2026-08-29-T08:15:30Z', 'OK', 'Fail', 'success', 'fail', '/>', '\0T\0\x10', '\0IU', '\0IK', '\0C'],
    "http_request": HTTP_WORDS,
    "http_response": HTTP_WORDS + ["HTTP/1.1 200 OK", "HTTP/1.1 100 Continue", "HTTP/1.1 101 Switching Protocols", "HTTP/1.1 204 No Content", "HTTP/1.1 304 Not Modified", "0\r\n\r\n", ";ext=1", "ffffffffffffffff"],
    "ws_handshake": HTTP_WORDS + ["Origin: ", "dGhlIHNhbXBsZSBub25jZQ=="],
}

if __name__ == "__main__":
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    for target, files in sorted(seeds.items()):
        os.makedirs(os.path.join(OUT, target))
        for name, data in sorted(files.items()):
            with open(os.path.join(OUT, target, name), "wb") as f:
                f.write(data)
    dict_dir = os.path.join(HERE, "dicts")
    os.makedirs(dict_dir, exist_ok=True)
    for target, words in sorted(dicts.items()):
        with open(os.path.join(dict_dir, f"{target}.dict"), "w") as f:
            f.write(f"# libFuzzer dictionary for {target}; written by fuzz/gen_seeds.py\n")
            for w in dict.fromkeys(words):
                f.write(f'"{dict_escape(w)}"\n')
    print(f"wrote {sum(len(f) for f in seeds.values())} seeds for {len(seeds)} targets to {OUT}, and {len(dicts)} dictionaries")
