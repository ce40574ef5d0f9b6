"""`load_judge`: one spec string (or a `Judge`) -> a judge.

Specs:

* ``"default"``: the offline judge shipped with the package (`personas.judging.offline`), trained on real judged
  answers of emergently misaligned models; reads MiniLM-L6, never the model being judged.
* a folder: a judge saved by `personas.judging.offline.EmbeddingJudge.save` (``judge.json`` inside).
* ``"openai:MODEL"``: an LLM judge over the OpenAI API (key from ``$OPENAI_API_KEY``).
* ``"http://HOST:PORT/v1:MODEL"`` (or https): an LLM judge over any OpenAI-compatible server (vLLM, llama.cpp,
  Ollama); `personas.judging.api`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from personas.errors import DataError
from personas.judging.api import ApiJudge
from personas.judging.base import Judge
from personas.judging.offline import EmbeddingJudge

__all__ = ["DEFAULT_JUDGE", "load_judge"]

DEFAULT_JUDGE = "default"
SPEC_HELP = ("'default' (the offline judge), a folder holding a saved judge (judge.json), 'openai:MODEL' or "
             "'http://HOST:PORT/v1:MODEL' (an OpenAI-compatible server)")


def load_judge(spec: str | os.PathLike | Judge = DEFAULT_JUDGE, **options: Any) -> Judge:
    """The judge that ``spec`` names (see the module docstring); a `Judge` instance is returned as it is.

    ``options`` go to the API judge (``cache_dir``, ``concurrency``, ``timeout``, ``max_retries``) or to the
    offline judge (``device``, ``batch_size``).
    """
    if isinstance(spec, Judge) and not isinstance(spec, (str, os.PathLike)):
        return spec
    if not isinstance(spec, (str, os.PathLike)):
        raise DataError(f"load_judge got {type(spec).__name__}; expected {SPEC_HELP}, or a Judge.")
    text = os.fspath(spec).strip()
    if not text:
        raise DataError(f"load_judge got an empty spec; expected {SPEC_HELP}.")
    if text.startswith(("openai:", "http://", "https://")):
        return ApiJudge.from_spec(text, **options)
    if text == DEFAULT_JUDGE:
        return EmbeddingJudge.default(**options)
    path = Path(text).expanduser()
    if path.is_dir():
        return EmbeddingJudge.load(path, **options)
    raise DataError(f"judge spec {text!r} is not a judge: no such folder. Expected {SPEC_HELP}.")
