"""Generation watched by a monitor: batched, cached decoding that reads the monitor's site in the same forward pass.

`monitored_decode` answers a batch of requests, each with its own sampling settings (``temperature``, ``top_p``,
``seed``), length (``max_new_tokens``) and stop strings, through `personas.steering.BatchDecoder` (one forward over
the left-padded prompts, then one token per row through the key-value cache, with any active `steer` hooks). A
`SiteReader` hooked at the detector's site keeps the activation of the token each forward was fed, so the token
generated at step t is read by the forward of step t + 1, the forward that computes the next token's logits anyway;
only an answer that ends by length or a stop string needs its last token read by one more forward, taken when the
whole batch has ended, and ended at the monitor's site (the reader stops the pass there). No second pass over the
answer: the monitor costs the SAE encode of one activation per token and per row (`TokenScorer.features`) and
the pooling at the end.

Each request may stream: ``on_text`` receives the answer's new text as it is decoded (text that could still become
a stop string, a partial UTF-8 character and trailing whitespace are held back, so the pieces add up to the final
answer), ``cancelled`` is polled every step (a client that disconnected stops its row), and ``on_done`` receives the
`GenerationResult` as soon as that row is complete, while other rows of the batch continue. Sampling draws from one
seeded generator per request, so an answer does not depend on the batch it was decoded in; ``temperature=0`` is
greedy. Answers are decoded without special tokens and stripped, as `personas.steering.generate` strips them.

`render_chat` turns chat messages into the prompt's token ids (the model's chat template with the generation prompt,
else ``CaptureConfig.prompt_format``), as the server and `Monitor.generate` feed them.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from personas.config import CaptureConfig
from personas.errors import PersonasError
from personas.models import as_model_handle
from personas.monitoring.scorer import TokenScorer, Verdict
from personas.steering import BatchDecoder, stop_token_ids

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

__all__ = ["GenerationRequest", "GenerationResult", "SiteReader", "monitored_decode", "render_chat"]

FINISH_REASONS = ("stop", "length", "cancelled")


@dataclass
class GenerationRequest:
    """One answer to generate: the prompt's token ids and how to decode it (see the module docstring)."""

    ids: list[int]
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    on_text: Callable[[str], None] | None = field(default=None, repr=False)
    on_done: Callable[[GenerationResult], None] | None = field(default=None, repr=False)
    cancelled: Callable[[], bool] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.ids:
            raise PersonasError("a generation request has no prompt tokens; expected at least one.")
        if self.max_new_tokens < 1:
            raise PersonasError(f"max_new_tokens={self.max_new_tokens}; expected at least 1.")
        if self.temperature < 0 or not 0.0 < self.top_p <= 1.0:
            raise PersonasError(f"temperature={self.temperature}, top_p={self.top_p}; expected temperature >= 0 and "
                                "0 < top_p <= 1.")
        self.stop = tuple(s for s in self.stop if s)


@dataclass
class GenerationResult:
    """A generated answer: its text, token ids, why it ended (``stop``, ``length`` or ``cancelled``), the number of
    prompt tokens, and the monitor's verdict (None without a monitor, or for a cancelled answer)."""

    text: str
    token_ids: list[int]
    finish_reason: str
    n_prompt: int
    verdict: Verdict | None = None
    seed: int | None = None


class _ReadDone(Exception):
    """Raised by a `SiteReader` told to end the forward pass once it has read (the batch's last forward)."""


class SiteReader:
    """A read-only hook: keeps the activation at ``hook_name`` of the last position of every forward ([batch, d]).
    With ``stop`` set, it ends the forward pass right after reading (raising `_ReadDone`): the last forward of a
    batch is only needed up to the monitor's site."""

    def __init__(self, hook_name: str) -> None:
        self.hook_name = hook_name
        self.last: torch.Tensor | None = None
        self.stop = False

    def __call__(self, activation: Any, hook: Any = None) -> Any:
        x = activation[0] if isinstance(activation, tuple) else activation
        self.last = x.reshape(x.shape[0], x.shape[1], -1)[:, -1].detach()
        if self.stop:
            raise _ReadDone()
        return activation


def render_chat(model: Any, messages: Sequence[dict[str, str]], config: CaptureConfig | None = None) -> list[int]:
    """Token ids of a conversation up to the assistant's answer: the chat template with the generation prompt, or
    (models without one) ``config.prompt_format`` around the turns' text, with BOS where the model expects it."""
    config = config or CaptureConfig()
    handle = as_model_handle(model)
    tok = handle.tokenizer
    if handle.is_encoder:
        raise PersonasError(f"model {handle.model_id!r} is an encoder; a server or monitor generates with a causal "
                            "chat model.")
    turns = [{"role": m["role"], "content": m["content"]} for m in messages]
    if config.system_prompt and not any(m["role"] == "system" for m in turns):
        turns.insert(0, {"role": "system", "content": config.system_prompt})
    if getattr(tok, "chat_template", None):
        try:
            text = tok.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
        except Exception as exc:  # jinja errors: a role the template does not know, a system turn it refuses
            raise PersonasError(f"the model's chat template refused these messages ({type(exc).__name__}: {exc}); "
                                "check the roles (system, user, assistant) and their order.") from exc
        return list(tok(text, add_special_tokens=False)["input_ids"])
    body = "\n".join(m["content"] for m in turns)
    ids = list(tok(config.prompt_format.replace("{prompt}", body), add_special_tokens=False)["input_ids"])
    if getattr(handle.model.cfg, "default_prepend_bos", True) and tok.bos_token_id is not None:
        ids = [tok.bos_token_id, *ids]
    return ids


class _Row:
    """The decoding state of one request."""

    def __init__(self, request: GenerationRequest) -> None:
        self.request = request
        self.seed = request.seed if request.seed is not None else secrets.randbits(63)
        self.tokens: list[int] = []
        self.feats: list[np.ndarray] = []
        self.emitted = 0  # characters of the answer streamed so far
        self.finish: str | None = None
        self.cut: int | None = None  # where a stop string starts in the decoded text
        self.result: GenerationResult | None = None
        self.generator: Any = None


def monitored_decode(model: Any, requests: Sequence[GenerationRequest], *, scorer: TokenScorer | None = None,
                     threshold: float = 0.0, stop_ids: set[int] | None = None) -> list[GenerationResult]:
    """Answer ``requests`` in one batch; with a ``scorer``, each answer gets the monitor's `Verdict` at
    ``threshold``, from activations read during generation (see the module docstring)."""
    import torch

    handle = as_model_handle(model)
    tok = handle.tokenizer
    stop = stop_token_ids(tok) if stop_ids is None else set(stop_ids)
    rows = [_Row(r) for r in requests]
    if not rows:
        return []
    for row in rows:
        if row.request.temperature > 0:
            row.generator = torch.Generator().manual_seed(int(row.seed))
    reader = SiteReader(scorer.hook) if scorer is not None else None
    with torch.no_grad(), BatchDecoder(handle, [r.request.ids for r in rows],
                                       readers=[reader] if reader is not None else []) as dec:
        logits = dec.first()
        while True:
            nxt = _choose(logits.float().cpu(), rows)
            fed: list[int] = []  # rows whose token of this step is part of their answer
            for r, row in enumerate(rows):
                if row.finish is not None:
                    continue
                if row.request.cancelled is not None and row.request.cancelled():
                    row.finish = "cancelled"
                    continue
                token = int(nxt[r])
                if token in stop:
                    row.finish = "stop"
                    continue
                row.tokens.append(token)
                fed.append(r)
                _advance_text(row, tok)
            _complete_ready(rows, tok, scorer, threshold)
            everyone_done = all(row.finish is not None for row in rows)
            if everyone_done and (reader is None or not fed):
                break
            if everyone_done:  # this forward only reads the last tokens: it can end at the monitor's site
                reader.stop = True
            try:
                logits = dec.next(nxt.to(logits.device))
            except _ReadDone:
                pass
            if reader is not None and fed:
                feats = scorer.features(reader.last[fed])
                for i, r in enumerate(fed):
                    rows[r].feats.append(feats[i])
            _complete_ready(rows, tok, scorer, threshold)
            if everyone_done:
                break
    return [row.result for row in rows]


def _choose(logits: torch.Tensor, rows: list[_Row]) -> torch.Tensor:
    """Next token per row: argmax, or a sample from the row's generator at its temperature and top_p."""
    import torch

    out = logits.argmax(dim=-1)
    for r, row in enumerate(rows):
        req = row.request
        if row.finish is not None or req.temperature <= 0:
            continue
        scaled = logits[r].double() / req.temperature
        probs = torch.softmax(scaled, dim=-1)
        if req.top_p < 1.0:
            order = torch.argsort(probs, descending=True)
            sorted_probs = probs[order]
            keep = torch.cumsum(sorted_probs, 0) - sorted_probs < req.top_p  # the smallest set reaching top_p
            probs = torch.zeros_like(probs).index_put_((order[keep],), sorted_probs[keep])
        out[r] = torch.multinomial(probs, 1, generator=row.generator)[0]
    return out


def _advance_text(row: _Row, tok: Any) -> None:
    """After a new token: end the row at a stop string or its length; else stream the text that is settled."""
    req = row.request
    text = tok.decode(row.tokens, skip_special_tokens=True)
    if req.stop:
        hits = [i for i in (text.find(s) for s in req.stop) if i >= 0]
        if hits:
            row.cut = min(hits)
            row.finish = "stop"
            return
    if len(row.tokens) >= req.max_new_tokens:
        row.finish = "length"
        return
    if req.on_text is not None:
        settled = _settled(text.lstrip(), req.stop)
        if len(settled) > row.emitted:
            req.on_text(settled[row.emitted:])
            row.emitted = len(settled)


def _settled(text: str, stops: tuple[str, ...]) -> str:
    """``text`` less what may still change: a partial character, the start of a stop string, trailing space."""
    text = text.rstrip("\ufffd")
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                text = text[:-k]
                break
    return text.rstrip()


def _complete_ready(rows: list[_Row], tok: Any, scorer: TokenScorer | None, threshold: float) -> None:
    """Finish the rows that ended and whose tokens have all been read: final text, verdict, ``on_done``."""
    for row in rows:
        if row.finish is None or row.result is not None:
            continue
        if row.finish != "cancelled" and scorer is not None and len(row.feats) < len(row.tokens):
            continue  # its last token is read by the next forward
        full = tok.decode(row.tokens, skip_special_tokens=True)
        tokens = row.tokens
        if row.cut is not None:
            full = full[:row.cut]
            tokens = _tokens_of(row.tokens, row.cut, tok)
        text = full.strip()
        verdict = None
        if scorer is not None and row.finish != "cancelled":
            feats = np.asarray(row.feats[:len(tokens)]).reshape(len(tokens), scorer.width)
            verdict = scorer.verdict(feats, threshold)
        row.result = GenerationResult(text=text, token_ids=list(tokens), finish_reason=row.finish,
                                      n_prompt=len(row.request.ids), verdict=verdict, seed=row.seed)
        req = row.request
        if req.on_text is not None and row.finish != "cancelled" and len(text) > row.emitted:
            req.on_text(text[row.emitted:])
            row.emitted = len(text)
        if req.on_done is not None:
            req.on_done(row.result)


def _tokens_of(tokens: list[int], cut: int, tok: Any) -> list[int]:
    """The leading tokens that hold the first ``cut`` characters of the decoded text (a token that straddles the
    cut is kept; the tokens wholly inside the stop string are not)."""
    n = len(tokens)
    while n > 1 and len(tok.decode(tokens[:n - 1], skip_special_tokens=True)) >= cut:
        n -= 1
    return tokens[:n] if cut > 0 else []
