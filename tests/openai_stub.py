"""Test helper: a small OpenAI-compatible chat server on 127.0.0.1 that answers from fixtures.

A fixture maps a text found in the request's last text part (the question) to the replies of successive requests
holding it; the last reply repeats. A reply is one of

* ``{"answer": "..."}``: a chat completion whose first choice says that;
* ``{"status": 429, "retry_after": 0}`` (or any other status): an OpenAI-style error body with that status;
* ``{"sleep": 2.0}``: no reply for that long (a client with a shorter timeout gives up), then the next reply;
* ``{"body": "..."}``: a 200 reply with that raw body (malformed JSON); ``{"no_choices": True}``: JSON without choices.

Every request's JSON body is kept in ``requests`` (in arrival order).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def completion(text: str, model: str) -> dict:
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def question_of(body: dict) -> str:
    content = body["messages"][-1]["content"]
    if isinstance(content, str):
        return content
    return [part["text"] for part in content if part.get("type") == "text"][-1]


class StubServer:
    def __init__(self, fixtures: dict[str, list[dict]], default: dict | None = None, model: str | None = None):
        self.fixtures, self.default, self.model = fixtures, default or {"answer": "I do not know."}, model
        self.requests: list[dict] = []
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def requests_for(self, text: str) -> int:
        return sum(text in question_of(body) for body in self.requests)

    def next_reply(self, body: dict) -> dict:
        question = question_of(body)
        with self.lock:
            self.requests.append(body)
            key = next((key for key in self.fixtures if key in question), None)
            if key is None:
                return self.default
            count = self.counts.get(key, 0)
            self.counts[key] = count + 1
            replies = self.fixtures[key]
            return replies[min(count, len(replies) - 1)]

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, payload: bytes, headers: dict | None = None):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting (a timeout test)
                    pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if server.model is not None and body.get("model") != server.model:
                    error = {"error": {"message": f"The model {body.get('model')} does not exist", "type": "x"}}
                    return self._send(404, json.dumps(error).encode())
                reply = server.next_reply(body)
                if "sleep" in reply:
                    time.sleep(reply["sleep"])
                    return self._send(200, json.dumps(completion("too late", body["model"])).encode())
                if "body" in reply:
                    return self._send(200, reply["body"].encode())
                if reply.get("no_choices"):
                    return self._send(200, json.dumps({**completion("", body["model"]), "choices": []}).encode())
                if "status" in reply:
                    error = {"error": {"message": f"stub error {reply['status']}", "type": "stub", "code": None}}
                    headers = {"retry-after": str(reply["retry_after"])} if "retry_after" in reply else None
                    return self._send(reply["status"], json.dumps(error).encode(), headers)
                return self._send(200, json.dumps(completion(reply["answer"], body["model"])).encode())

        return Handler
