// A device and an operator over TLS, as Node.js users write them: `ws` to wss:// and the
// built-in https module, trusting the test's self-signed certificate through `ca`.
// Usage: node tls-client.js HOST:PORT CA_FILE DEVICE_ID TOKEN ADMIN_TOKEN
// Prints one JSON line: {"registered":…,"ack":…,"devices_status":…,"authorized":…}
const fs = require("fs")
const https = require("https")
const WebSocket = require("ws")

const [addr, caFile, deviceId, token, adminToken] = process.argv.slice(2)
const ca = fs.readFileSync(caFile)
const result = {}

function finish(code) {
  console.log(JSON.stringify(result))
  process.exit(code)
}
setTimeout(() => { result.error = "timeout"; finish(1) }, 15000)

const ws = new WebSocket(`wss://${addr}/ws`, { ca })
ws.on("error", (e) => { result.error = String(e); finish(1) })
ws.on("open", () => {
  result.authorized = ws._socket.authorized
  ws.send(JSON.stringify({ type: "register", device_id: deviceId, token }))
})
ws.on("message", (data) => {
  const m = JSON.parse(data)
  if (m.type === "registered") {
    result.registered = m.device_id
    ws.send(JSON.stringify({ type: "telemetry", msg_id: "tls-1", payload: { over: "tls", big: "z".repeat(40000) } }))
  } else if (m.type === "ack") {
    result.ack = m.msg_id
    ws.close()
    https.get(`https://${addr}/api/devices/${deviceId}`, { ca, headers: { Authorization: `Bearer ${adminToken}` } }, (res) => {
      let body = ""
      res.on("data", (c) => (body += c))
      res.on("end", () => {
        result.devices_status = res.statusCode
        result.device = JSON.parse(body)
        finish(0)
      })
    }).on("error", (e) => { result.error = String(e); finish(1) })
  } else if (m.type === "error") {
    result.error = JSON.stringify(m)
    finish(1)
  }
})
