// Ready-to-paste device code, filled in with this server's address, the device id and token.

/** JS/Python/C string literal content: escape backslashes and double quotes. */
const q = (s) => String(s).replace(/\\/g, '\\\\').replace(/"/g, '\\"');

export function wsUrl() {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${location.host}/ws`;
}

export function httpUrl() {
  return `${location.protocol}//${location.host}/api/device-http`;
}

/** The connect guide's Node.js example with WS_URL, DEVICE_ID and TOKEN filled in, plus the one
 * addition that lets the dashboard show commands as acked: a `command_result` after each command. */
export function nodeSnippet(url, deviceId, token) {
  return `const WebSocket = require("ws")

const WS_URL = "${q(url)}"
const DEVICE_ID = "${q(deviceId)}" // From dashboard
const TOKEN = "${q(token)}" // From dashboard

let ws = null
let reconnectTimer = null

function connect() {
  console.log("Connecting to", WS_URL)
  ws = new WebSocket(WS_URL)

  ws.on("open", () => {
    console.log("Connected! Registering...")
    ws.send(JSON.stringify({
      type: "register",
      device_id: DEVICE_ID,
      token: TOKEN
    }))
  })

  ws.on("message", (data) => {
    const msg = JSON.parse(data.toString())
    console.log("Received:", msg)

    if (msg.type === "command") {
      handleCommand(msg.command, msg.payload)
      // Tell the server it ran: the dashboard shows the command as acked.
      ws.send(JSON.stringify({
        type: "command_result",
        command_id: msg.command_id,
        status: "ok"
      }))
    }
  })

  ws.on("close", () => {
    console.log("Disconnected. Reconnecting in 5s...")
    reconnectTimer = setTimeout(connect, 5000)
  })

  ws.on("error", (err) => {
    console.error("WebSocket error:", err.message)
  })
}

function handleCommand(command, payload) {
  console.log("Executing command:", command, payload)
  // Implement your device-specific logic here
}

function sendTelemetry(data) {
  if (ws?.readyState === WebSocket.OPEN) {
    ws.send(JSON.stringify({
      type: "telemetry",
      payload: data
    }))
  }
}

// Start connection
connect()

// Send telemetry every 30 seconds
setInterval(() => {
  sendTelemetry({
    temperature: 22.5 + Math.random() * 2,
    humidity: 45 + Math.random() * 10
  })
}, 30000)
`;
}

export function pythonSnippet(url, deviceId, token) {
  return `# pip install websocket-client
import json
import random
import threading
import time

import websocket

WS_URL = "${q(url)}"
DEVICE_ID = "${q(deviceId)}"  # From dashboard
TOKEN = "${q(token)}"  # From dashboard


def handle_command(ws, msg):
    print("Executing command:", msg.get("command"), msg.get("payload"))
    # Implement your device-specific logic here, then report the result:
    ws.send(json.dumps({
        "type": "command_result",
        "command_id": msg.get("command_id"),
        "status": "ok",
    }))


def telemetry_loop(ws, stop):
    while not stop.wait(30):  # every 30 seconds
        ws.send(json.dumps({
            "type": "telemetry",
            "payload": {
                "temperature": 22.5 + random.random() * 2,
                "humidity": 45 + random.random() * 10,
            },
        }))


def on_open(ws):
    print("Connected! Registering...")
    ws.send(json.dumps({"type": "register", "device_id": DEVICE_ID, "token": TOKEN}))


def on_message(ws, data):
    msg = json.loads(data)
    print("Received:", msg)
    if msg.get("type") == "registered":
        ws.stop = threading.Event()
        threading.Thread(target=telemetry_loop, args=(ws, ws.stop), daemon=True).start()
    elif msg.get("type") == "command":
        handle_command(ws, msg)


def on_close(ws, code, reason):
    print("Disconnected:", code, reason)
    if getattr(ws, "stop", None):
        ws.stop.set()


def on_error(ws, err):
    print("WebSocket error:", err)


if __name__ == "__main__":
    while True:
        app = websocket.WebSocketApp(WS_URL, on_open=on_open, on_message=on_message,
                                     on_close=on_close, on_error=on_error)
        app.run_forever(ping_interval=30)
        print("Reconnecting in 5s...")
        time.sleep(5)
`;
}

export function esp32Snippet(url, deviceId, token) {
  let host = 'SERVER_IP';
  let port = 3000;
  let path = '/ws';
  try {
    const u = new URL(url.replace(/^ws/, 'http'));
    host = u.hostname;
    port = Number(u.port) || (u.protocol === 'https:' ? 443 : 80);
    path = u.pathname;
  } catch { /* keep defaults */ }
  const tls = url.startsWith('wss:');
  return `// ESP32 (Arduino): libraries "WebSockets" by Markus Sattler and "ArduinoJson" (v7)
#include <WiFi.h>
#include <WebSocketsClient.h>
#include <ArduinoJson.h>

const char* WIFI_SSID = "your-wifi";
const char* WIFI_PASS = "your-password";

const char* WS_HOST = "${q(host)}";
const uint16_t WS_PORT = ${port};
const char* WS_PATH = "${q(path)}";
const char* DEVICE_ID = "${q(deviceId)}";  // From dashboard
const char* TOKEN = "${q(token)}";  // From dashboard

WebSocketsClient ws;
unsigned long lastTelemetry = 0;
bool registered = false;

void sendJson(JsonDocument& doc) {
  String out;
  serializeJson(doc, out);
  ws.sendTXT(out);
}

void handleCommand(const char* commandId, const char* command, JsonVariant payload) {
  Serial.printf("Executing command: %s\\n", command);
  // Implement your device-specific logic here, then report the result:
  JsonDocument res;
  res["type"] = "command_result";
  res["command_id"] = commandId;
  res["status"] = "ok";
  sendJson(res);
}

void onEvent(WStype_t type, uint8_t* data, size_t len) {
  if (type == WStype_CONNECTED) {
    Serial.println("Connected! Registering...");
    JsonDocument doc;
    doc["type"] = "register";
    doc["device_id"] = DEVICE_ID;
    doc["token"] = TOKEN;
    sendJson(doc);
  } else if (type == WStype_DISCONNECTED) {
    registered = false;
    Serial.println("Disconnected. Reconnecting...");
  } else if (type == WStype_TEXT) {
    JsonDocument msg;
    if (deserializeJson(msg, data, len)) return;
    const char* t = msg["type"] | "";
    if (strcmp(t, "registered") == 0) {
      registered = true;
      Serial.println("Authenticated");
    } else if (strcmp(t, "command") == 0) {
      handleCommand(msg["command_id"] | "", msg["command"] | "", msg["payload"]);
    }
  }
}

void setup() {
  Serial.begin(115200);
  WiFi.begin(WIFI_SSID, WIFI_PASS);
  while (WiFi.status() != WL_CONNECTED) delay(500);
  ${tls ? 'ws.beginSSL(WS_HOST, WS_PORT, WS_PATH);' : 'ws.begin(WS_HOST, WS_PORT, WS_PATH);'}
  ws.onEvent(onEvent);
  ws.setReconnectInterval(5000);
  ws.enableHeartbeat(30000, 5000, 2);
}

void loop() {
  ws.loop();
  if (registered && millis() - lastTelemetry > 30000) {  // every 30 seconds
    lastTelemetry = millis();
    JsonDocument doc;
    doc["type"] = "telemetry";
    doc["payload"]["temperature"] = 22.5 + random(0, 200) / 100.0;
    doc["payload"]["humidity"] = 45 + random(0, 1000) / 100.0;
    sendJson(doc);
  }
}
`;
}

const shq = (s) => `'${String(s).replace(/'/g, `'\\''`)}'`;

export function httpCurlSnippet(url, serial) {
  const reg = JSON.stringify({ cmd: 'reg', sn: serial, cpusn: 'CPU_SERIAL', devinfo: { modelname: 'device-model', firmware: 'v1.0.0' } });
  const log = JSON.stringify({ cmd: 'sendlog', sn: serial, count: 1, logindex: 0, record: [{ enrollid: 1, time: '2026-06-12T09:15:30', mode: 1, inout: 0, event: 0 }] });
  const live = JSON.stringify({ cmd: 'checklive', sn: serial, time: '2026-06-12T09:20:00' });
  return `# 1. Register on startup
curl -s -X POST ${shq(url)} -H 'Content-Type: application/json' \\
     -d ${shq(reg)}

# 2. Send attendance logs
curl -s -X POST ${shq(url)} -H 'Content-Type: application/json' \\
     -d ${shq(log)}

# 3. Heartbeat (every 60 s)
curl -s -X POST ${shq(url)} -H 'Content-Type: application/json' \\
     -d ${shq(live)}
`;
}

export function httpPythonSnippet(url, serial) {
  return `# pip install requests
import time
from datetime import datetime

import requests

URL = "${q(url)}"
SN = "${q(serial)}"


def register():
    payload = {
        "cmd": "reg",
        "sn": SN,
        "cpusn": "12345",
        "devinfo": {"modelname": "device", "firmware": "v1.0"},
    }
    r = requests.post(URL, json=payload)
    print("Registered:", r.json())


def send_log(enrollid):
    payload = {
        "cmd": "sendlog",
        "sn": SN,
        "count": 1,
        "record": [{
            "enrollid": enrollid,
            "time": datetime.now().isoformat(timespec="seconds"),
            "mode": 1,
            "inout": 0,
        }],
    }
    r = requests.post(URL, json=payload)
    print("Sent log:", r.json())  # result false: keep the record and send it again


def heartbeat():
    payload = {"cmd": "checklive", "sn": SN, "time": datetime.now().isoformat(timespec="seconds")}
    r = requests.post(URL, json=payload)
    print("Heartbeat:", r.json()["result"])


if __name__ == "__main__":
    register()
    send_log(123)
    while True:  # a checklive every 60 s keeps the device online
        heartbeat()
        time.sleep(60)
`;
}
