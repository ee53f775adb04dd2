#!/usr/bin/env python3
"""Scripted OpenAI-compatible chat-completions server on loopback (tars test fixture, stdlib only).

Usage: fake_server.py SCRIPT.json LOG.jsonl PORT_FILE [--task T] [--history N]
SCRIPT is a JSON list of responses served in order (the last one repeats), each one of
  {"content": "reply text"}            -> 200 with a chat.completion body
  {"status": 500, "body": "text"}      -> that status and body
  {"raw": "text"}                      -> 200 with a non-JSON body
  {"delay": seconds, ...}              -> wait first
Each request is checked against the message layout tars must send (system line; user text with the
action space ending with the task; past assistant replies, each after its screenshot while within the
history window; a final user image; images are PNG data URLs) and logged as one JSON line:
  {"n": i, "ok": true|false, "problem": "...", "roles": "s,u,i,a,i", "images": [[w,h],...],
   "assistant": [...], "temperature": t, "top_p": p, "max_tokens": m, "model": name,
   "t": arrival time in s (time.monotonic)}
"""
import base64, json, struct, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer

script = json.load(open(sys.argv[1]))
log_path, port_file = sys.argv[2], sys.argv[3]
opts = sys.argv[4:]
task = opts[opts.index("--task") + 1] if "--task" in opts else None
history = int(opts[opts.index("--history") + 1]) if "--history" in opts else 5
count = 0


def png_size(url):
    prefix = "data:image/png;base64,"
    if not url.startswith(prefix):
        raise ValueError("image url is not a PNG data URL")
    data = base64.b64decode(url[len(prefix):], validate=True)
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("image is not a PNG")
    return list(struct.unpack(">II", data[16:24]))


def check(req):
    """Returns (problem or '', roles string, image sizes, assistant texts)."""
    msgs = req.get("messages")
    roles, sizes, assistant = [], [], []
    if not isinstance(msgs, list) or len(msgs) < 3:
        return "messages missing or too short", "", sizes, assistant
    for m in msgs:
        c = m.get("content")
        if m["role"] == "system":
            roles.append("s")
        elif m["role"] == "assistant":
            roles.append("a")
            assistant.append(c)
        elif isinstance(c, list) and len(c) == 1 and c[0].get("type") == "image_url":
            roles.append("i")
            try:
                sizes.append(png_size(c[0]["image_url"]["url"]))
            except Exception as e:  # noqa: BLE001
                return str(e), ",".join(roles), sizes, assistant
        elif isinstance(c, list) and len(c) == 1 and c[0].get("type") == "text":
            roles.append("u")
        else:
            return ("unexpected message %r" % (m,))[:80], ",".join(roles), sizes, assistant
    r = ",".join(roles)
    if roles[:2] != ["s", "u"]:
        return "must start with system, user text", r, sizes, assistant
    text = msgs[1]["content"][0]["text"]
    if "## Action Space" not in text or "click(start_box=" not in text:
        return "first user text lacks the action space", r, sizes, assistant
    if task is not None and not text.endswith(task):
        return "first user text does not end with the task", r, sizes, assistant
    if roles[-1] != "i":
        return "must end with the current screenshot", r, sizes, assistant
    body = roles[2:-1]
    # past steps: optional image then assistant; images only for the newest history-1 steps
    steps, i = [], 0
    while i < len(body):
        if body[i] == "i":
            if i + 1 >= len(body) or body[i + 1] != "a":
                return "an image not followed by the assistant reply", r, sizes, assistant
            steps.append(True)
            i += 2
        elif body[i] == "a":
            steps.append(False)
            i += 1
        else:
            return "unexpected turn", r, sizes, assistant
    want = [k >= len(steps) + 1 - history for k in range(len(steps))]
    if steps != want:
        return "image window %s, want %s" % (steps, want), r, sizes, assistant
    return "", r, sizes, assistant


class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_POST(self):
        global count
        n = count
        count += 1
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        entry = {"n": n, "path": self.path, "t": time.monotonic()}
        try:
            req = json.loads(body)
            problem, roles, sizes, assistant = check(req)
            entry.update(ok=not problem, problem=problem, roles=roles, images=sizes, assistant=assistant,
                         temperature=req.get("temperature"), top_p=req.get("top_p"),
                         max_tokens=req.get("max_tokens"), model=req.get("model"),
                         auth=self.headers.get("Authorization"))
        except Exception as e:  # noqa: BLE001
            entry.update(ok=False, problem="request is not JSON: %s" % e)
        with open(log_path, "a") as f:
            f.write(json.dumps(entry) + "\n")
        step = script[min(n, len(script) - 1)]
        time.sleep(step.get("delay", 0))
        if not entry["ok"] and self.path.endswith("/chat/completions"):
            self.reply(400, json.dumps({"error": {"message": "layout: " + entry["problem"]}}))
        elif "content" in step:
            self.reply(200, json.dumps({"id": "x", "object": "chat.completion", "model": "m",
                                        "choices": [{"index": 0, "finish_reason": "stop",
                                                     "message": {"role": "assistant", "content": step["content"]}}]}))
        elif "raw" in step:
            self.reply(200, step["raw"])
        else:
            self.reply(step.get("status", 500), step.get("body", "server error"))

    def reply(self, status, text):
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


srv = HTTPServer(("127.0.0.1", 0), H)
with open(port_file + ".tmp", "w") as f:
    f.write(str(srv.server_port))
import os  # noqa: E402
os.rename(port_file + ".tmp", port_file)
srv.serve_forever()
