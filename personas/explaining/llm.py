"""An LLM over an OpenAI-compatible API for the explainer and the scorers, through the library's one API client.

`CachedLLM` sends chat requests with `personas.judging.client.ChatClient` (the API judge's client: key handling,
retries, bounded concurrency) and keeps every reply in a `personas.judging.judgment_cache.ReplyCache`, keyed by
the model, the prompts' version, the kind of request and its text: a rerun asks nothing twice, a run that failed
half-way resumes with the requests it had not made. It counts what each batch cost: requests sent (retries
included), replies taken from the cache, and the tokens the server reported.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personas.errors import DataError
from personas.judging.client import ChatClient, parse_spec
from personas.judging.judgment_cache import REPLY_CACHE_FILE, Reply, ReplyCache, reply_key
from personas.models.offline import default_cache_root

__all__ = ["PROMPT_VERSION", "CachedLLM", "Request"]

logger = logging.getLogger(__name__)

#: Part of every cache key: bump it when a prompt's wording changes, so old replies are not reused.
PROMPT_VERSION = "personas-explain-v1"
_OPTIONS = ("api_key_env", "cache_dir", "concurrency", "timeout", "max_retries", "backoff", "max_wait", "progress")
_WITHOUT_KEY = "explain with a local server ('http://HOST:PORT/v1:MODEL') or offline (--explainer offline)"


@dataclass(frozen=True)
class Request:
    """One chat request: what it is for (``kind``: explain, detection, fuzzing), its text and its reply length."""

    kind: str
    content: str
    max_tokens: int


class CachedLLM:
    """A model on an OpenAI-compatible server, asked through the shared client, its replies cached on disk.

    Args:
        spec: ``"openai:MODEL"`` or ``"http(s)://HOST:PORT/v1:MODEL"``.
        cache_dir: folder of the reply cache; default ``<user cache>/personas/explain``.
        options: the client's (``api_key_env``, ``concurrency``, ``timeout``, ``max_retries``, ``backoff``,
            ``max_wait``, ``progress``).
    """

    def __init__(self, spec: str, *, cache_dir: str | os.PathLike | None = None, **options: Any) -> None:
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise DataError(f"an API explainer got unknown option(s) {unknown}; expected some of {list(_OPTIONS)}.")
        base_url, model = parse_spec(spec, role="explainer")
        self.client = ChatClient(model, base_url, role="explainer", who="CachedLLM", without_key=_WITHOUT_KEY,
                                 **options)
        self.name, self.model = self.client.name, self.client.model
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root() / "explain"
        #: What the calls so far did: requests sent, replies from the cache, tokens the server reported.
        self.stats: dict[str, int] = {"requests": 0, "asked": 0, "cached": 0, "prompt_tokens": 0,
                                      "completion_tokens": 0, "prompt_chars": 0}

    def __repr__(self) -> str:
        return f"CachedLLM({self.name!r}, api_key_env={self.client.api_key_env!r})"

    def describe(self) -> dict[str, Any]:
        """The model, the endpoint (without credentials), the prompts' version and the cache file."""
        return {**self.client.describe(), "prompt_version": PROMPT_VERSION,
                "cache": str(self.cache_dir / REPLY_CACHE_FILE)}

    def ask(self, requests: Mapping[str, Request]) -> dict[str, Reply]:
        """The reply to each request (by the caller's name for it), from the cache or the server."""
        keys = {name: reply_key(self.model, PROMPT_VERSION, r.kind, f"{r.max_tokens}\n{r.content}")
                for name, r in requests.items()}
        sent = self.client.counts["requests"]
        with ReplyCache(self.cache_dir) as cache:
            found = cache.get_many(sorted(set(keys.values())))
            todo: dict[str, Request] = {}
            for name, key in keys.items():
                if key not in found:
                    todo.setdefault(key, requests[name])
            self.stats["cached"] += len(set(keys.values())) - len(todo)
            self.stats["asked"] += len(todo)
            logger.info("%s: %d requests, %d replies cached, %d to ask for.", self.name, len(requests),
                        len(set(keys.values())) - len(todo), len(todo))

            def keep(key: str, reply: Reply) -> None:
                cache.put(key, self.model, PROMPT_VERSION, todo[key].kind, reply)
                found[key] = reply
                self.stats["prompt_tokens"] += reply.prompt_tokens or 0
                self.stats["completion_tokens"] += reply.completion_tokens or 0
                self.stats["prompt_chars"] += len(todo[key].content)

            try:
                self.client.run(todo, self._one, keep, desc="explain")
            finally:
                self.stats["requests"] += self.client.counts["requests"] - sent
        return {name: found[key] for name, key in keys.items()}

    def _one(self, request: Request) -> Reply:
        reply = self.client.complete(request.content, max_tokens=request.max_tokens)
        return Reply(reply.text, reply.prompt_tokens, reply.completion_tokens)
