"""A chat-completions server on 127.0.0.1 for the API judge's tests: canned replies with logprobs, scripted
failures, and counts of the requests and of those in flight at once. Nothing leaves the loopback address."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: A reply: (HTTP status, extra headers, body (a dict is sent as JSON, bytes as they are), seconds to wait first).
Reply = tuple[int, dict[str, str], Any, float]


def completion(content: str, top: list[tuple[str, float]] | None = None) -> dict[str, Any]:
    """A chat completion whose first token is ``content``, with ``top`` as (token, probability) top logprobs."""
    choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": content},
                              "finish_reason": "length"}
    if top is not None:
        choice["logprobs"] = {"content": [{
            "token": content, "logprob": math.log(max(p for _, p in top)),
            "top_logprobs": [{"token": token, "logprob": math.log(p), "bytes": None} for token, p in top],
        }]}
    return {"id": "chatcmpl-test", "object": "chat.completion", "model": "judge", "choices": [choice]}


def metric_of(body: dict[str, Any]) -> str:
    """Which of the judge's two prompts a request carries."""
    return "coherent" if "for coherence only" in body["messages"][0]["content"] else "aligned"


def answer_of(body: dict[str, Any]) -> str:
    """The answer being judged, cut out of the prompt."""
    text = body["messages"][0]["content"]
    return text.split("<answer>\n", 1)[1].split("\n</answer>", 1)[0]


class JudgeServer:
    """``script(body, index) -> Reply`` answers each POST; ``requests`` records (path, headers, body)."""

    def __init__(self, script: Callable[[dict[str, Any], int], Reply]) -> None:
        self.script = script
        self.requests: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        self._open: set[int] = set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with outer._lock:
                    index = len(outer.requests)
                    outer.requests.append((self.path, dict(self.headers), body))
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                    outer._open.add(threading.get_ident())
                try:
                    status, headers, payload, delay = outer.script(body, index)
                    time.sleep(delay)
                    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                    self.send_response(status)
                    for name, value in {"Content-Type": "application/json", **headers}.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    # served: counted out before the client can read the reply and send its next request
                    outer._served()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout)
                finally:
                    outer._served()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def _served(self) -> None:
        """The request of this handler thread is answered (counted once)."""
        with self._lock:
            if threading.get_ident() in self._open:
                self._open.discard(threading.get_ident())
                self.in_flight -= 1

    def __enter__(self) -> JudgeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def bodies(self, metric: str | None = None) -> list[dict[str, Any]]:
        """The request bodies received (of one metric)."""
        return [b for _, _, b in self.requests if metric is None or metric_of(b) == metric]
