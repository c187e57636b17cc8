const WebSocket = require("ws")
const WS_URL = "ws://YOUR_SERVER_IP:3000/ws"
const DEVICE_ID = "your-device-uuid" // From dashboard
const TOKEN = "tok_your_device_token" // From dashboard
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
