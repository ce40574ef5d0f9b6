"""The OpenAI chat-completions request and response, checked by hand so that every bad request gets the API's error.

`parse_chat_request` takes the decoded JSON body and the server's `Limits` and returns a `ChatRequest`, or raises
`ApiError` with the HTTP status and the error object the OpenAI API returns (``{"error": {"message", "type",
"param", "code"}}``): a body that is not a JSON object, a field of the wrong type, a value out of range, too many
messages, a ``max_tokens`` above the server's limit, an unknown model (404 ``model_not_found``). Fields the API
defines and this server does not implement (``n`` > 1, ``tools``, ``logprobs``...) are refused by name rather than
ignored; other unknown fields are ignored, as OpenAI-compatible servers do. A prompt too long for the context is
refused after rendering (`check_context`), where its length in tokens is known. Messages say what was received,
what was expected and how to fix it, and never echo more than a short prefix of a value.

`completion`, `chunk` and `error_body` build the response objects; `sse` frames one server-sent event.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ApiError", "ChatRequest", "Limits", "check_context", "chunk", "completion", "error_body",
           "parse_chat_request", "parse_score_request", "sse"]

ROLES = ("system", "developer", "user", "assistant")
#: Request fields of the API that this server does not implement: refused by name, never silently ignored.
UNSUPPORTED = ("tools", "tool_choice", "functions", "function_call", "logprobs", "top_logprobs", "response_format",
               "audio", "modalities", "prediction", "logit_bias")
MAX_STOP = 4
MAX_SCORE_PAIRS = 256


class ApiError(Exception):
    """An error answered with ``status`` and the OpenAI error object."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The error object of the API."""
        return error_body(self.message, kind=self.kind, param=self.param, code=self.code)


def error_body(message: str, *, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


@dataclass(frozen=True)
class Limits:
    """What one request may ask for (the server's `personas.config.ServeConfig` fills it)."""

    max_messages: int = 64
    max_tokens_limit: int = 512
    default_max_tokens: int = 128
    max_message_chars: int = 100_000


@dataclass
class ChatRequest:
    """A checked chat-completions request."""

    model: str
    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stream: bool = False
    include_usage: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object",
            type(None): "null"}.get(type(value), type(value).__name__)


def _number(body: dict[str, Any], name: str, default: float, lo: float, hi: float, *, open_low: bool = False) -> float:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ApiError(400, f"'{name}' is {_type_name(value)} {_short(value)}; expected a number between {lo} and "
                            f"{hi}.", param=name, code="invalid_type")
    if value < lo or value > hi or (open_low and value <= lo):
        side = f"greater than {lo}" if open_low else f"at least {lo}"
        raise ApiError(400, f"'{name}' is {value}; expected a number {side} and at most {hi}.", param=name,
                       code="invalid_value")
    return float(value)


def _integer(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"'{name}' is {_type_name(value)} {_short(value)}; expected an integer.", param=name,
                       code="invalid_type")
    return value


def _content(message: Any, i: int, limits: Limits) -> str:
    content = message.get("content")
    if isinstance(content, list):  # the API's content parts: text parts only here
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ApiError(400, f"messages[{i}].content[{j}] is not a text part; this server reads text only "
                                    "({'type': 'text', 'text': '...'}).", param=f"messages[{i}].content",
                               code="invalid_type")
            parts.append(part["text"])
        content = "".join(parts)
    if not isinstance(content, str):
        raise ApiError(400, f"messages[{i}].content is {_type_name(content)}; expected a string (or a list of text "
                            "parts).", param=f"messages[{i}].content", code="invalid_type")
    if len(content) > limits.max_message_chars:
        raise ApiError(400, f"messages[{i}].content has {len(content)} characters; at most {limits.max_message_chars} "
                            "are accepted.", param=f"messages[{i}].content", code="invalid_value")
    return content


def parse_chat_request(body: Any, served: str, limits: Limits) -> ChatRequest:
    """A `ChatRequest` from the decoded JSON ``body``, or an `ApiError` (see the module docstring)."""
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body is a JSON {_type_name(body)}; expected a JSON object with 'model' and "
                            "'messages'.", code="invalid_body")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, f"'model' is {_type_name(model)} {_short(model)}; expected the name of the served model, "
                            f"{served!r}.", param="model", code="invalid_type" if model is not None else "missing")
    if model != served:
        raise ApiError(404, f"the model {_short(model)} does not exist here; this server serves {served!r} "
                            "(GET /v1/models lists it).", param="model", code="model_not_found")
    for name in UNSUPPORTED:
        if body.get(name) not in (None, False, [], {}):
            raise ApiError(400, f"'{name}' is not supported by this server; leave it out.", param=name,
                           code="unsupported_parameter")
    n = body.get("n", 1)
    if n != 1 or isinstance(n, bool):
        raise ApiError(400, f"'n' is {_short(n)}; this server answers one choice per request (n = 1). Send several "
                            "requests instead.", param="n", code="unsupported_value")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, f"'messages' is {_type_name(messages)}{' (empty)' if messages == [] else ''}; expected a "
                            "non-empty array of {'role', 'content'} objects.", param="messages",
                       code="invalid_type" if messages is not None else "missing")
    if len(messages) > limits.max_messages:
        raise ApiError(400, f"'messages' has {len(messages)} messages; at most {limits.max_messages} are accepted.",
                       param="messages", code="too_many_messages")
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ApiError(400, f"messages[{i}] is {_type_name(message)}; expected an object with 'role' and "
                                "'content'.", param=f"messages[{i}]", code="invalid_type")
        role = message.get("role")
        if role not in ROLES:
            raise ApiError(400, f"messages[{i}].role is {_short(role)}; expected one of {list(ROLES)}.",
                           param=f"messages[{i}].role", code="invalid_value")
        checked.append({"role": "system" if role == "developer" else role, "content": _content(message, i, limits)})
    if checked[-1]["role"] == "assistant":
        raise ApiError(400, "the last message is the assistant's; expected the conversation to end with a user (or "
                            "system) message for the assistant to answer.", param="messages", code="invalid_value")
    max_tokens = _integer(body, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens")
    if max_tokens is None:
        max_tokens = limits.default_max_tokens
    elif not 1 <= max_tokens <= limits.max_tokens_limit:
        raise ApiError(400, f"'max_tokens' is {max_tokens}; this server generates 1 to {limits.max_tokens_limit} "
                            "tokens per request.", param="max_tokens", code="invalid_value")
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0, open_low=True)
    seed = _integer(body, "seed")
    stop = body.get("stop")
    if stop is None:
        stops: tuple[str, ...] = ()
    elif isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= MAX_STOP:
        stops = tuple(stop)
    else:
        raise ApiError(400, f"'stop' is {_type_name(stop)} {_short(stop)}; expected a string or an array of at most "
                            f"{MAX_STOP} strings.", param="stop", code="invalid_type")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise ApiError(400, f"'stream' is {_type_name(stream)} {_short(stream)}; expected true or false.",
                       param="stream", code="invalid_type")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise ApiError(400, f"'stream_options' is {_type_name(options)}; expected an object.", param="stream_options",
                       code="invalid_type")
    return ChatRequest(model=model, messages=checked, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                       seed=seed, stop=stops, stream=stream, include_usage=bool(options.get("include_usage")))


def check_context(n_prompt: int, max_tokens: int, n_ctx: int) -> None:
    """Refuse a prompt that leaves no room for ``max_tokens`` in the model's context (400
    ``context_length_exceeded``)."""
    if n_ctx and n_prompt + max_tokens > n_ctx:
        raise ApiError(400, f"the prompt is {n_prompt} tokens and max_tokens is {max_tokens}, {n_prompt + max_tokens} "
                            f"in all; the model reads at most {n_ctx} tokens. Shorten the messages or lower "
                            "max_tokens.", param="messages", code="context_length_exceeded")


def parse_score_request(body: Any, served: str) -> tuple[list[str], list[str]]:
    """(prompts, responses) of a ``/v1/persona/score`` body: ``{"pairs": [{"prompt", "response"}, ...]}`` (or
    ``"prompts"`` and ``"responses"`` arrays), at most `MAX_SCORE_PAIRS` pairs; ``model``, when given, must be
    the served one."""
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body is a JSON {_type_name(body)}; expected an object with 'pairs'.",
                       code="invalid_body")
    model = body.get("model")
    if model is not None and model != served:
        raise ApiError(404, f"the model {_short(model)} does not exist here; this server reads with {served!r}.",
                       param="model", code="model_not_found")
    if "pairs" in body:
        pairs = body["pairs"]
        if not isinstance(pairs, list) or not pairs:
            raise ApiError(400, f"'pairs' is {_type_name(pairs)}; expected a non-empty array of {{'prompt', "
                                "'response'}} objects.", param="pairs", code="invalid_type")
        if not all(isinstance(p, dict) for p in pairs):
            raise ApiError(400, "every item of 'pairs' must be an object with 'prompt' and 'response' strings.",
                           param="pairs", code="invalid_type")
        prompts, responses = [p.get("prompt") for p in pairs], [p.get("response") for p in pairs]
    else:
        prompts, responses = body.get("prompts"), body.get("responses")
        if not isinstance(prompts, list) or not isinstance(responses, list) or len(prompts) != len(responses):
            raise ApiError(400, "expected 'pairs' (an array of {'prompt', 'response'}) or two arrays 'prompts' and "
                                "'responses' of one length.", param="pairs", code="missing")
    if len(prompts) > MAX_SCORE_PAIRS:
        raise ApiError(400, f"{len(prompts)} pairs; at most {MAX_SCORE_PAIRS} per request.", param="pairs",
                       code="invalid_value")
    for kind, values in (("prompt", prompts), ("response", responses)):
        for i, value in enumerate(values):
            if not isinstance(value, str) or (kind == "response" and not value.strip()):
                raise ApiError(400, f"pair {i}: '{kind}' is {_type_name(value)} {_short(value)}; expected a "
                                    f"{'non-empty ' if kind == 'response' else ''}string.", param="pairs",
                               code="invalid_type")
    return prompts, responses


def new_id() -> str:
    """A completion id in the API's style."""
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def completion(cid: str, model: str, text: str, finish: str, n_prompt: int, n_completion: int,
               persona: dict[str, Any] | None) -> dict[str, Any]:
    """A ``chat.completion`` object with the ``persona`` verdict beside ``choices``."""
    return {
        "id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                     "finish_reason": finish}],
        "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_completion,
                  "total_tokens": n_prompt + n_completion},
        "persona": persona,
    }


def chunk(cid: str, model: str, created: int, delta: dict[str, Any], finish: str | None = None,
          **extra: Any) -> dict[str, Any]:
    """A ``chat.completion.chunk`` object (``extra``: ``persona`` on the last one, ``usage``)."""
    out = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
           "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    out.update(extra)
    return out


def sse(obj: Any) -> bytes:
    """One server-sent event: ``data: JSON`` and a blank line (``data: [DONE]`` for the string ``"[DONE]"``)."""
    data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return f"data: {data}\n\n".encode()
