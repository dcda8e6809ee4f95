#!/usr/bin/python3
"""A stand-in application behind the gateway, with Debian's Python: an HTTP server that
echoes what it received as JSON (path, headers), redirects, sets cookies and answers slowly
on request, and a WebSocket echo server (python3-websockets). Prints its two ports on one
line once both listen."""
import asyncio, json, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import websockets


class App(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, code, body=b"", headers=()):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        p = self.path
        if p.startswith("/redirect"):
            self.reply(302, headers=[("Location", "/login?next=/")])
        elif p.startswith("/absolute-redirect"):
            host = self.headers.get("Host")
            self.reply(302, headers=[("Location", f"http://{host}/done")])
        elif p.startswith("/cookie"):
            self.reply(200, b"ok", headers=[("Set-Cookie", "sid=abc; Path=/; HttpOnly")])
        elif p.startswith("/slow"):
            time.sleep(3)
            self.reply(200, b"slow")
        elif p.startswith("/half-body"):
            # Half of the body it announces, then nothing for 30 s (a stalled upstream).
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"h" * 500)
            self.wfile.flush()
            time.sleep(30)
        elif p.startswith("/status500"):
            self.reply(500, b"broken")
        elif p.startswith("/judge-uri"):
            # A forward-auth service as many are written: it believes the first
            # X-Forwarded-Uri and lets /public/ through; it answers what it saw.
            ok = (self.headers.get("X-Forwarded-Uri") or "").startswith("/public/")
            seen = {k: self.headers.get_all(k) for k in
                    ("X-Forwarded-Uri", "X-Forwarded-Host", "X-Forwarded-Proto",
                     "X-Forwarded-For", "X-Forwarded-Method", "X-Forwarded-Prefix",
                     "Forwarded", "X-Real-IP")}
            self.reply(200 if ok else 401, json.dumps(seen).encode(),
                       headers=[("Content-Type", "application/json")])
        elif p.startswith("/auth"):
            ok = self.headers.get("X-Token") == "let-me-in"
            self.reply(200 if ok else 401, b"auth", headers=[("X-Seen-Uri", self.headers.get("X-Forwarded-Uri", ""))])
        else:
            body = json.dumps({"path": p, "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
            self.reply(200, body, headers=[("Content-Type", "application/json")])


    def do_POST(self):
        # Reads the whole body (Content-Length or chunked), then echoes its length.
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            n = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                self.rfile.read(size + 2)
                n += size
                if size == 0:
                    break
        else:
            n = len(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        body = json.dumps({"path": self.path, "body-bytes": n}).encode()
        self.reply(200, body, headers=[("Content-Type", "application/json")])


async def echo(ws, path=None):
    async for msg in ws:
        await ws.send(msg)


async def main():
    http = ThreadingHTTPServer(("127.0.0.1", 0), App)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    async with websockets.serve(echo, "127.0.0.1", 0) as ws:
        ws_port = ws.sockets[0].getsockname()[1]
        print(http.server_address[1], ws_port, flush=True)
        await asyncio.Future()


asyncio.run(main())
