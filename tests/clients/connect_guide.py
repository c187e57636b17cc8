import requests
import json
from datetime import datetime

URL = "https://your-host/api/device-http"
SN = "YOUR_DEVICE_SN"

# 1. Register device
def register():
    payload = {
        "cmd": "reg",
        "sn": SN,
        "cpusn": "12345",
        "devinfo": {"modelname": "device", "firmware": "v1.0"}
    }
    r = requests.post(URL, json=payload)
    print("Registered:", r.json())

# 2. Send attendance log
def send_log():
    payload = {
        "cmd": "sendlog",
        "sn": SN,
        "count": 1,
        "record": [{
            "enrollid": 123,
            "time": datetime.now().isoformat(),
            "mode": 1,
            "inout": 0
        }]
    }
    r = requests.post(URL, json=payload)
    print("Sent log:", r.json())

# 3. Send heartbeat
def heartbeat():
    payload = {
        "cmd": "checklive",
        "sn": SN,
        "time": datetime.now().isoformat()
    }
    r = requests.post(URL, json=payload)
    print("Heartbeat:", r.json()['result'])

if __name__ == "__main__":
    register()
    send_log()
    heartbeat()
