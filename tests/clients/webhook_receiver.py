#!/usr/bin/env python3
"""A webhook receiver for tests/webhooks.rs.

Standard mode (the default) verifies every delivery with the Standard Webhooks reference library
(`standardwebhooks`), records each verified message as one JSON line in OUT
({"webhook_id","type","data"}), and answers 204. A delivery that fails verification is recorded as
{"bad": "<why>"} and answered 400.

ERPNext mode (--erpnext KEY:SECRET) plays ERPNext's add_log_based_on_employee_field: it checks
`Authorization: token KEY:SECRET` and the path, records the posted check-in, and answers a second
check-in of the same employee and time 417 with ERPNext's "already has a log" message.

Usage: webhook_receiver.py PORT OUT (--secret whsec_… | --erpnext KEY:SECRET)
"""

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook, WebhookVerificationError

ERPNEXT_PATH = "/api/method/hrms.hr.doctype.employee_checkin.employee_checkin.add_log_based_on_employee_field"

args = None
lock = threading.Lock()
seen_checkins = set()


def record(line):
    with lock:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def answer(self, status, body=b""):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if args.erpnext:
            return self.erpnext(body)
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            msg = Webhook(args.secret).verify(body, headers)
        except WebhookVerificationError as e:
            record({"bad": str(e)})
            return self.answer(400)
        record({"webhook_id": headers["webhook-id"], "type": msg["type"], "data": msg["data"]})
        self.answer(204)

    def erpnext(self, body):
        if self.headers.get("Authorization") != f"token {args.erpnext}":
            record({"bad": "authorization " + str(self.headers.get("Authorization"))})
            return self.answer(401, b'{"exc_type":"AuthenticationError"}')
        if self.path != ERPNEXT_PATH:
            record({"bad": "path " + self.path})
            return self.answer(404)
        checkin = json.loads(body)
        key = (checkin.get("employee_field_value"), checkin.get("timestamp"))
        with lock:
            duplicate = key in seen_checkins
            seen_checkins.add(key)
        if duplicate:
            return self.answer(417, b'{"exc_type":"ValidationError","_server_messages":"This employee already has a log with the same timestamp."}')
        record({"checkin": checkin})
        self.answer(200, b'{"message":{"name":"EMP-CKIN-0001"}}')


def main():
    global args
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("out")
    p.add_argument("--secret")
    p.add_argument("--erpnext")
    args = p.parse_args()
    if not (args.secret or args.erpnext):
        sys.exit("--secret or --erpnext is required")
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print("listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
