"""One client for OpenAI-compatible chat-completions APIs (OpenAI itself; vLLM, llama.cpp, Ollama servers).

Every use of an LLM over an API goes through `ChatClient`: the API judge (`personas.judging.api`), the API
explainer and the detection and fuzzing scorers (`personas.explaining`). It owns what they share:

* **the endpoint**: a spec ``"openai:MODEL"`` or ``"http(s)://HOST:PORT/v1:MODEL"`` (`parse_spec`), the URL shown
  without a user name or password (`public_url`);
* **the key**: read from an environment variable (``$OPENAI_API_KEY`` for OpenAI's URL; for other servers none is
  sent unless ``api_key_env`` names one, so that an OpenAI key never goes to a third-party server). It is sent only
  in the Authorization header, never written to a description, a cache, a log or an error message (`redact`).
  Redirects are not followed (they would carry the header elsewhere) and loopback servers are reached without a
  proxy;
* **retries**: 429, 408 and 5xx replies, timeouts and connection errors are retried up to ``max_retries`` times
  with exponential back-off and jitter (a Retry-After header is honoured, up to ``max_wait``); other 4xx replies,
  bodies that are not chat completions and exhausted retries end in an `ApiError` that quotes the server's
  message. A 400 that names logprobs is `LogprobsRefused`, so that a caller can ask again without them;
* **concurrency**: `ChatClient.run` sends many requests through a bounded thread pool; the first request that
  fails for good stops the others, the results already in flight are still handed back, and every result reaches
  the calling thread (which alone writes the caller's cache, `personas.judging.judgment_cache`);
* **counts**: requests sent and the tokens the server reports (``usage``), for the cost of a run.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import os
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, TypeVar

from personas.errors import DataError, PersonasError

__all__ = ["API_PREFIXES", "ApiError", "ChatClient", "Completion", "LogprobsRefused", "OPENAI_URL", "SPEC_FORMS",
           "parse_spec", "public_url"]

logger = logging.getLogger(__name__)

#: Specs that name an LLM over an API.
API_PREFIXES = ("openai:", "http://", "https://")
OPENAI_URL = "https://api.openai.com/v1"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
SPEC_FORMS = "'openai:MODEL' or 'http://HOST:PORT/v1:MODEL' (the server's API root, then ':' and the model name)"
_RETRY_STATUS = {408, 429}

T = TypeVar("T")
R = TypeVar("R")


class ApiError(PersonasError):
    """The server refused a request, sent a body that is not a chat completion, or could not be reached."""


class LogprobsRefused(Exception):
    """The server rejected the logprobs parameters (HTTP 400 naming them): ask again without them."""


class _Stopped(Exception):
    """Another request failed for good: the others stop waiting."""


def parse_spec(spec: str, role: str = "judge") -> tuple[str, str]:
    """``(base_url, model)`` of an API spec (see `SPEC_FORMS`), or a `DataError` saying what is wrong."""
    text = str(spec).strip()
    if text.startswith("openai:"):
        model = text[len("openai:"):].strip()
        if not model:
            raise DataError(f"{role} spec {text!r} names no model; expected 'openai:MODEL', e.g. 'openai:gpt-4o'.")
        return OPENAI_URL, model
    match = re.fullmatch(r"(https?://[^/\s]+)(/[^:\s]*):(\S.*)", text)
    if match is None or not match.group(3).strip():
        raise DataError(f"{role} spec {public_url(text)!r} is not an API {role} spec; expected {SPEC_FORMS}, e.g. "
                        "'http://localhost:8000/v1:Qwen/Qwen2.5-7B-Instruct'.")
    return match.group(1) + match.group(2).rstrip("/"), match.group(3).strip()


def public_url(url: str) -> str:
    """``url`` without a user name or password in it."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


@dataclass(frozen=True)
class Completion:
    """One chat completion: its text, its first token's top logprobs (None when the reply has none), and the
    tokens the server counted (None when it sends no ``usage``)."""

    text: str
    top_logprobs: list[tuple[str, float]] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class ChatClient:
    """Requests to one model on one OpenAI-compatible server (see the module docstring).

    Args:
        model: the model's name on the server (``gpt-4o``, ``Qwen/Qwen2.5-7B-Instruct``...).
        base_url: the API root, up to and including ``/v1``; default OpenAI's.
        api_key_env: the environment variable holding the key; ``None``: ``OPENAI_API_KEY`` for OpenAI's URL,
            no key for other servers. A variable that is named must be set.
        concurrency: requests in flight at most.
        timeout: seconds a request may wait on the server (per socket operation) before it counts as failed.
        max_retries: retries of a request after a 429, 408 or 5xx reply, a timeout or a connection error.
        backoff: first back-off in seconds (doubled per retry, up to ``max_wait``, with jitter).
        max_wait: the longest single wait, also for a Retry-After header.
        progress: show a progress bar in `run`.
        role: what the client serves, for messages (``"judge"``, ``"explainer"``).
        who: the caller's name in messages about its arguments (``"ApiJudge"``).
        without_key: what to do instead when the key is missing, for the message.
    """

    def __init__(self, model: str, base_url: str = OPENAI_URL, *, api_key_env: str | None = None,
                 concurrency: int = 8, timeout: float = 60.0, max_retries: int = 5, backoff: float = 1.0,
                 max_wait: float = 60.0, progress: bool = False, role: str = "judge", who: str = "ChatClient",
                 without_key: str = "use a local server ('http://HOST:PORT/v1:MODEL')") -> None:
        if not isinstance(model, str) or not model.strip():
            raise DataError(f"{who}(model={model!r}); expected the {role} model's name on the server.")
        for name, value, low in (("concurrency", concurrency, 1), ("max_retries", max_retries, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise DataError(f"{who}({name}={value!r}); expected an integer >= {low}.")
        for name, value in (("timeout", timeout), ("backoff", backoff), ("max_wait", max_wait)):
            if not isinstance(value, (int, float)) or not value > 0:
                raise DataError(f"{who}({name}={value!r}); expected a positive number of seconds.")
        self.model = model.strip()
        self.base_url = base_url.rstrip("/")
        self.endpoint = public_url(self.base_url)
        self.role = role
        self.name = f"openai:{self.model}" if self.base_url == OPENAI_URL else f"{self.endpoint}:{self.model}"
        self.api_key_env = api_key_env or (DEFAULT_KEY_ENV if self.base_url == OPENAI_URL else None)
        self._key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if self.api_key_env and not self._key:
            raise PersonasError(
                f"{role} {self.name} needs an API key in the environment variable ${self.api_key_env}, which is not "
                f"set. Set it (export {self.api_key_env}=...), name another variable with api_key_env= "
                f"(--api-key-env), or {without_key}."
            )
        self.concurrency, self.timeout, self.max_retries = concurrency, float(timeout), max_retries
        self.backoff, self.max_wait, self.progress = float(backoff), float(max_wait), progress
        host = urllib.parse.urlsplit(self.base_url).hostname or ""
        handlers: list[Any] = [_NoRedirect()]
        if host in ("localhost", "::1") or host.startswith("127."):
            handlers.append(urllib.request.ProxyHandler({}))
        self._opener = urllib.request.build_opener(*handlers)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._random = random.Random()
        #: Requests sent (retries included) and the tokens servers reported, over the client's life.
        self.counts = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}

    def __repr__(self) -> str:
        return f"ChatClient({self.name!r}, api_key_env={self.api_key_env!r}, concurrency={self.concurrency})"

    def describe(self) -> dict[str, Any]:
        """The model, the endpoint (without credentials) and the name (never the value) of the key's variable."""
        return {"name": self.name, "kind": "api", "model": self.model, "endpoint": self.endpoint,
                "api_key_env": self.api_key_env}

    # -- many requests -----------------------------------------------------------------------------------------

    def run(self, tasks: Mapping[str, T], work: Callable[[T], R], done: Callable[[str, R], None],
            desc: str = "requests") -> None:
        """``work(task)`` for every task, at most ``concurrency`` at once; ``done(key, result)`` in the calling
        thread as each one ends (so that the caller's cache is written by one thread). The first failure stops the
        others, keeps what the requests in flight bring back, and is raised."""
        from tqdm.auto import tqdm

        if not tasks:
            return
        self._stop.clear()
        bar = tqdm(total=len(tasks), desc=desc, unit="req", disable=not self.progress, leave=False)
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix=f"personas-{self.role}")
        futures = {pool.submit(self._work_or_stop, work, task): key for key, task in tasks.items()}
        error: BaseException | None = None
        try:
            for future in as_completed(futures):  # after a failure, keep what the requests in flight bring back
                key = futures[future]
                if future.cancelled():
                    continue
                if future.exception() is not None:
                    if error is None and not isinstance(future.exception(), _Stopped):
                        error = future.exception()
                        for other in futures:
                            other.cancel()
                    continue
                done(key, future.result())
                bar.update(1)
        except BaseException:
            self._stop.set()
            for future in futures:
                future.cancel()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
        if error is not None:
            raise error

    def _work_or_stop(self, work: Callable[[T], R], task: T) -> R:
        """``work(task)``; a failure stops the other workers before they take another request."""
        try:
            return work(task)
        except PersonasError:
            self._stop.set()
            raise

    # -- one request -------------------------------------------------------------------------------------------

    def complete(self, messages: str | Sequence[Mapping[str, str]], *, max_tokens: int, logprobs: bool = False,
                 top_logprobs: int = 20, temperature: float = 0.0) -> Completion:
        """One chat completion of ``messages`` (a string is one user message); with ``logprobs``, the first
        token's ``top_logprobs`` are asked for (`LogprobsRefused` when the server rejects the parameters)."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        body: dict[str, Any] = {"model": self.model, "messages": [dict(m) for m in messages],
                                "temperature": temperature, "max_tokens": int(max_tokens)}
        if logprobs:
            body.update(logprobs=True, top_logprobs=int(top_logprobs))
        reply = self._post(body, logprobs)
        choices = reply.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise ApiError(f"{self.name} answered with a JSON body without 'choices' ({_preview(reply)}); expected "
                           "an OpenAI chat completion. Check that the URL is the API root of an OpenAI-compatible "
                           "server (e.g. http://localhost:8000/v1).")
        message = choices[0].get("message")
        text = message.get("content") if isinstance(message, dict) else None
        usage = reply.get("usage") if isinstance(reply.get("usage"), dict) else {}
        used = [_count(usage.get(k)) for k in ("prompt_tokens", "completion_tokens")]
        with self._lock:
            for name, value in zip(("prompt_tokens", "completion_tokens"), used, strict=True):
                self.counts[name] += value or 0
        return Completion(text if isinstance(text, str) else "", _top_logprobs(choices[0].get("logprobs")), *used)

    def _post(self, body: dict[str, Any], logprobs: bool) -> dict[str, Any]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        request = urllib.request.Request(self.base_url + "/chat/completions", data=json.dumps(body).encode("utf-8"),
                                         headers=headers, method="POST")
        problem = ""
        for attempt in range(self.max_retries + 1):
            if self._stop.is_set():
                raise _Stopped()
            wait = None
            with self._lock:
                self.counts["requests"] += 1
            try:
                with self._opener.open(request, timeout=self.timeout) as response:
                    raw = response.read()
                return self._decode(raw)
            except urllib.error.HTTPError as exc:
                message = self._server_message(exc)
                if exc.code not in _RETRY_STATUS and exc.code < 500:
                    if logprobs and exc.code == 400 and "logprob" in message.lower():
                        raise LogprobsRefused() from None
                    raise self._http_error(exc.code, message) from None
                problem, wait = f"HTTP {exc.code} ({message})", _retry_after(exc.headers)
            except (OSError, http.client.HTTPException) as exc:
                reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
                if isinstance(reason, (TimeoutError, socket.timeout)):
                    problem = f"no reply within {self.timeout:g} s (the timeout)"
                else:
                    problem = f"could not reach {self.endpoint} ({self.redact(str(reason) or type(reason).__name__)})"
            if attempt == self.max_retries:
                break
            delay = wait if wait is not None else self.backoff * 2 ** attempt * (0.5 + 0.5 * self._random.random())
            delay = min(delay, self.max_wait)
            logger.info("%s: %s; retry %d of %d in %.2f s.", self.name, problem, attempt + 1, self.max_retries, delay)
            if self._stop.wait(delay):
                raise _Stopped()
        tries = f"{self.max_retries + 1} tries" if self.max_retries else "1 try"
        raise ApiError(f"{self.name}: gave up after {tries}; the last: {problem}. Expected a "
                       "chat completion. Check that the server is up and not overloaded, or raise max_retries= / "
                       "timeout= (--max-retries, --timeout); the replies received so far are cached, so a rerun "
                       "resumes.")

    def _decode(self, raw: bytes) -> dict[str, Any]:
        try:
            reply = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            reply = None
        if not isinstance(reply, dict):
            raise ApiError(f"{self.name} answered with a body that is not a JSON object "
                           f"({self.redact(_preview(raw))}); expected an OpenAI chat completion. Check that the URL "
                           "is the API root of an OpenAI-compatible server (e.g. http://localhost:8000/v1).")
        return reply

    def _server_message(self, exc: urllib.error.HTTPError) -> str:
        try:
            raw = exc.read()
        except (OSError, http.client.HTTPException):
            raw = b""
        text = raw.decode("utf-8", "replace").strip()
        try:
            reply = json.loads(text)
        except json.JSONDecodeError:
            reply = None
        if isinstance(reply, dict):
            error = reply.get("error", reply.get("message", reply.get("detail")))
            if isinstance(error, dict):
                error = error.get("message", error)
            text = str(error) if error is not None else text
        return self.redact(" ".join(text.split())[:300] or exc.reason or "no message")

    def _http_error(self, status: int, message: str) -> ApiError:
        if status in (401, 403):
            fix = (f"check the key in ${self.api_key_env}" if self.api_key_env else
                   "this server may want a key: name the variable that holds it with api_key_env= (--api-key-env)")
        elif status == 404:
            fix = "check the URL (the API root, e.g. http://localhost:8000/v1) and the model name"
        elif 300 <= status < 400:
            fix = "redirects are not followed; give the final URL of the API root"
        else:
            fix = "check the model name and that the server supports chat completions"
        return ApiError(f"{self.name} refused the request with HTTP {status}: {message}. Expected a chat completion; "
                        f"{fix}.")

    def redact(self, text: str) -> str:
        """``text`` with the API key replaced by ``[api key]``."""
        return text.replace(self._key, "[api key]") if self._key else text


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects become errors: following one would send the Authorization header to another address."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102
        return None


def _count(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _top_logprobs(logprobs: Any) -> list[tuple[str, float]] | None:
    """The first token's top logprobs as (token, logprob) pairs, or None when the reply has none."""
    if not isinstance(logprobs, dict) or not isinstance(logprobs.get("content"), list) or not logprobs["content"]:
        return None
    first = logprobs["content"][0]
    entries = first.get("top_logprobs") if isinstance(first, dict) else None
    if not isinstance(entries, list):
        return None
    top = [(str(e.get("token", "")), float(e["logprob"])) for e in entries
           if isinstance(e, dict) and isinstance(e.get("logprob"), (int, float)) and not isinstance(e["logprob"], bool)]
    return top or None


def _retry_after(headers: Any) -> float | None:
    """Seconds a Retry-After header asks for (a number or an HTTP date), or None."""
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _preview(value: Any) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else json.dumps(value)[:400]
    text = " ".join(text.split())
    return repr(text[:120] + ("..." if len(text) > 120 else "")) if text else "an empty body"
