"""Token highlighting: the text each token covers in a response, and that text as HTML coloured by activation.

`token_pieces` splits a response into one piece per token such that the pieces join back into the original text,
case and spelling kept: with a fast (Rust) tokenizer it re-tokenizes the text with ``return_offsets_mapping`` and
cuts the text at the character spans the tokenizer reports, so a word split into several tokens ("cal", "orie")
still reads as one word, and an uncased tokenizer's lower-casing never shows. When the tokenizer gives no offsets,
or its tokens of the text differ from the captured ones, it falls back to `token_strings`, which decodes the
tokens (the text as the tokenizer normalised it). `tokens_html` renders the pieces, each with a background that
deepens with its activation; `personas.report.examples` builds the tables of top-activating examples on it.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["token_color", "token_pieces", "token_strings", "tokens_html"]


def token_strings(tokenizer: Any, token_ids: Sequence[int]) -> list[str]:
    """The text each token contributes to the decoded string, leading space included (``" world"``).

    Works for WordPiece (``##`` pieces join the previous word), byte-level BPE and SentencePiece tokenizers: each
    piece is the difference between decoding the first i+1 and the first i tokens. When decoding rewrites earlier
    text, the token's own string is used instead. This is the decoded text (lower-cased by an uncased tokenizer);
    `token_pieces` gives the original text when the tokenizer reports character offsets.
    """
    ids = [int(i) for i in token_ids]
    out: list[str] = []
    previous = ""
    for i in range(len(ids)):
        current = tokenizer.decode(ids[: i + 1])
        if current.startswith(previous) and len(current) > len(previous):
            piece = current[len(previous):]
        else:
            raw = tokenizer.convert_ids_to_tokens(ids[i])
            raw = raw if isinstance(raw, str) else str(raw)
            piece = raw[2:] if raw.startswith("##") else (" " if i else "") + raw.replace("\u0120", "").replace("\u2581", "")
        out.append(piece)
        previous = current
    return out


def _offsets(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]]] | None:
    """(token ids, character spans) of ``text`` without special tokens, or None when the tokenizer has no spans."""
    if not getattr(tokenizer, "is_fast", False):
        return None
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except (TypeError, ValueError, NotImplementedError) as exc:
        logger.debug("no offsets from %s: %s", type(tokenizer).__name__, exc)
        return None
    return list(enc["input_ids"]), [(int(s), int(e)) for s, e in enc["offset_mapping"]]


def token_pieces(tokenizer: Any, token_ids: Sequence[int], text: str | None = None) -> list[str]:
    """One string per token of ``token_ids`` that together spell ``text`` as written.

    ``token_ids`` are the tokens of a response as captured (the whole response, or its start when the capture
    truncated it); ``text`` is that response. Each piece runs from the end of the previous token's span to the end
    of its own, so it carries the spaces before the token; a token whose span adds nothing (a second byte of one
    character) gets an empty piece. Without ``text``, without offsets, or when re-tokenizing ``text`` does not
    give ``token_ids`` back, the pieces are `token_strings` (decoded text).
    """
    ids = [int(i) for i in token_ids]
    found = _offsets(tokenizer, text) if text is not None else None
    if found is None or found[0][: len(ids)] != ids:
        return token_strings(tokenizer, ids)
    pieces = []
    cursor = 0
    for _, end in found[1][: len(ids)]:
        pieces.append(text[cursor:end] if end > cursor else "")
        cursor = max(cursor, end)
    return pieces


def token_color(value: float, scale: float) -> str:
    """The CSS background of a token with activation ``value`` when the strongest shown is ``scale``."""
    if value <= 0 or scale <= 0:
        return "transparent"
    alpha = min(1.0, value / scale)
    return f"rgba(231,76,60,{0.08 + 0.82 * alpha:.3f})"


def tokens_html(tokens: Sequence[str], acts: Sequence[float], scale: float) -> str:
    """The tokens as escaped HTML, each in a ``personas-token`` span coloured by its activation (its title)."""
    parts = []
    for tok, act in zip(tokens, acts, strict=True):
        stripped = tok.lstrip()
        lead = tok[: len(tok) - len(stripped)]
        value = float(act)
        parts.append(
            html.escape(lead)
            + f'<span class="personas-token" title="{value:.3f}" style="background:{token_color(value, scale)}">'
            + html.escape(stripped)
            + "</span>"
        )
    return "".join(parts)
