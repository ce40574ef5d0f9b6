"""`load_judge`: one spec string (or a `Judge`) -> a judge.

Specs:

* ``"default"``: the offline judge shipped with the package (`personas.judging.reader`), trained on real judged
  answers of emergently misaligned models and hand-written contrast sets; SmolLM2-135M-Instruct and MiniLM-L6 read
  the text (never the judged model's activations).
* ``"minilm-em-judge"``: the earlier offline judge (`personas.judging.offline`), shipped too, for comparisons.
* a folder: a judge saved by `ReaderJudge.save` or `EmbeddingJudge.save` (``judge.json`` inside; its
  ``kind`` says which).
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
from personas.judging.offline import DEFAULT_JUDGE_DIR, EmbeddingJudge, default_judge_dir
from personas.judging.reader import KIND as READER_KIND
from personas.judging.reader import ReaderJudge

__all__ = ["DEFAULT_JUDGE", "load_judge"]

DEFAULT_JUDGE = "default"
SPEC_HELP = ("'default' (the offline judge), 'minilm-em-judge' (the earlier offline judge), a folder holding a "
             "saved judge (judge.json), 'openai:MODEL' or 'http://HOST:PORT/v1:MODEL' (an OpenAI-compatible server)")
#: the earlier offline judge, shipped beside the default by its folder's name
EARLIER_JUDGE = DEFAULT_JUDGE_DIR.rsplit("/", 1)[-1]


def _offline_options(options: dict[str, Any], keep: tuple[str, ...]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(keep) - {"progress"})
    if unknown:
        raise DataError(f"load_judge: options {unknown} do not apply to an offline judge; it takes {list(keep)}.")
    return {k: v for k, v in options.items() if k in keep}


def _load_folder(path: Path, options: dict[str, Any]) -> Judge:
    """A saved judge folder: a reader judge when its judge.json says so (kind "reader-ridge"), else the earlier kind."""
    import json

    try:
        kind = json.loads((path / "judge.json").read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        kind = None
    if kind == READER_KIND:
        return ReaderJudge.load(path, **_offline_options(options, ("device", "dtype", "batch_size")))
    return EmbeddingJudge.load(path, **_offline_options(options, ("device", "batch_size", "path")))


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
        return ReaderJudge.default(**_offline_options(options, ("device", "dtype", "batch_size")))
    if text == EARLIER_JUDGE and not Path(text).is_dir():
        return EmbeddingJudge.load(default_judge_dir(), **_offline_options(options, ("device", "batch_size", "path")))
    path = Path(text).expanduser()
    if path.is_dir():
        return _load_folder(path, options)
    raise DataError(f"judge spec {text!r} is not a judge: no such folder. Expected {SPEC_HELP}.")


def load_optional_judge(spec: str | os.PathLike | Judge | None, **options: Any) -> Judge | None:
    """`load_judge`, or ``None`` for ``None`` / ``"none"``: the runs that can measure without reading the answers
    (steering, the sweep) take this; a run whose measure is the EM verdict refuses ``None`` itself."""
    if spec is None or (isinstance(spec, (str, os.PathLike)) and os.fspath(spec).strip().lower() == "none"):
        return None
    return load_judge(spec, **options)
