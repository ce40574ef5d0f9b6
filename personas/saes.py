"""Load SAEs with sae-lens, check that they fit the model site, and encode activations in chunks.

An SAE is named by a spec string:

* ``"default"``: the SAE `personas` trained and ships for the offline default model (``data/saes/``);
* the folder name of any SAE `personas` ships (`shipped_saes`), e.g. an earlier default kept under its own name;
* a folder written by sae-lens (``cfg.json`` + ``sae_weights.safetensors``), e.g. one from ``personas train-sae``;
* ``"RELEASE:SAE_ID"``: a pretrained sae-lens release, e.g. ``"gpt2-small-res-jb:blocks.8.hook_resid_pre"`` or
  ``"gemma-scope-2b-pt-res-canonical:layer_12/width_16k/canonical"``.

`encode_sparse` encodes activations chunk by chunk and keeps only the non-zero codes; given a `ReconstructionStats`
it also decodes each chunk and accumulates how well the SAE reconstructs them (explained variance, L0, dead
latents), so a capture reports the SAE's fit on the user's own data at the cost of one decode.

`check_sae_spec` checks a spec without loading anything heavy (a folder's ``cfg.json`` and the shapes in its
weights file's header, or a release's name in the sae-lens directory), so that jobs can fail on a wrong SAE in
milliseconds, before a model loads. Training lives in `personas.training`.

Why this module is long: it is the one place that knows what an SAE is to personas: how a spec resolves
(defaults, shipped names, folders, releases), the cheap checks, loading, chunked sparse encoding with its
reconstruction totals, and an SAE's identity (`sae_fingerprint`, `sae_identity`), which caches, runs and saved
detectors record so that latent indices are never read through another SAE. Split, each part would import the
others.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from personas.config import DEFAULT_MODEL
from personas.devices import resolve_device, resolve_dtype
from personas.errors import ModelLoadError, PersonasError, SiteMismatchError
from personas.logs import quiet_third_party
from personas.models import hub_error
from personas.offline_models import OFFLINE_MODELS, offline_model

if TYPE_CHECKING:
    import scipy.sparse
    import torch

    from personas.models import ModelHandle

logger = logging.getLogger(__name__)

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
#: Weight name -> its expected shape in terms of the config's d_in and d_sae (None: any size), and whether every
#: architecture has it (gated SAEs have no b_enc; transcoders decode to another width).
_SHAPES = {"W_enc": (("d_in", "d_sae"), True), "W_dec": (("d_sae", None), True), "b_enc": (("d_sae",), False)}


def data_dir() -> Path:
    """The folder of the files personas ships: ``saes/`` and ``demo_responses.jsonl``.

    They are package data (``personas/resources/``), found with `importlib.resources`, so an installed wheel has
    them as a clone does. The ``PERSONAS_DATA`` environment variable points elsewhere (a folder of the same layout).
    """
    from importlib import resources  # here, not at the top: this function is the only user

    env = os.environ.get("PERSONAS_DATA")
    return Path(env) if env else Path(resources.files("personas").joinpath("resources"))


def default_sae_path(model: str | None = None) -> Path:
    """The folder of the SAE personas ships for ``model`` (an offline model's alias or id; default: the offline
    default model). A `PersonasError` lists the models that have one when ``model`` has none."""
    name = model or DEFAULT_MODEL
    offline = offline_model(name)
    if offline is None:
        shipped = ", ".join(f"{m.aliases[0]} ({m.model_id})" for m in OFFLINE_MODELS)
        raise PersonasError(
            f"no SAE ships for the model {name!r}: --sae default means the SAE personas trained for an offline model "
            f"({shipped}). Pass --sae FOLDER (e.g. from `personas train-sae`), --sae RELEASE:SAE_ID of a sae-lens "
            "release, or --sae none to rank the raw activation dimensions."
        )
    return data_dir() / "saes" / offline.sae


def shipped_saes() -> dict[str, Path]:
    """Every SAE `personas` ships, by folder name (``personas/resources/saes/``): the defaults and earlier ones."""
    folder = data_dir() / "saes"
    if not folder.is_dir():
        return {}
    return {p.name: p for p in sorted(folder.iterdir()) if (p / CFG_FILE).is_file()}


def check_sae_spec(spec: str | os.PathLike | Any, model: str | None = None) -> Path | tuple[str, str] | None:
    """Check an SAE spec without loading the SAE: raise `ModelLoadError` / `PersonasError` when it cannot work.

    Returns the folder of a folder spec (``"default"`` included: the SAE shipped for ``model``, see
    `default_sae_path`), ``(release, sae_id)`` of a pretrained release, and None for ``"none"``/None or an SAE
    object. Cheap: it reads ``cfg.json`` and the weights file's header only.
    """
    if spec is None or not isinstance(spec, (str, os.PathLike)):
        return None
    text = str(spec)
    if text.lower() == "none":
        return None
    if text == "default":
        path = default_sae_path(model)
        if not (path / CFG_FILE).exists():
            raise ModelLoadError(
                f"the default SAE is not at {path}. It ships inside the package (personas/resources/saes/): "
                "reinstall personas, point PERSONAS_DATA at a folder holding saes/, or rebuild it with "
                "`personas train-sae`."
            )
        check_sae_folder(path)
        return path
    if os.path.isdir(text):
        check_sae_folder(text)
        return Path(text)
    if (shipped := shipped_saes().get(text)) is not None:  # a folder in the working directory wins over a name
        check_sae_folder(shipped)
        return shipped
    if os.path.exists(text):
        raise ModelLoadError(
            f"SAE {text!r} is a file; expected the folder sae-lens saves an SAE into ({CFG_FILE} and {WEIGHTS_FILE}), "
            "'RELEASE:SAE_ID', or 'default'."
        )
    if ":" not in text:
        names = ", ".join(shipped_saes()) or "none found"
        raise PersonasError(
            f"SAE spec {text!r} is neither a folder, a shipped SAE's name nor 'RELEASE:SAE_ID'. Examples: "
            "'gpt2-small-res-jb:blocks.8.hook_resid_pre', a folder from `personas train-sae`, or 'default'. "
            f"Shipped SAEs: {names}."
        )
    release, sae_id = text.split(":", 1)
    _check_release(release, sae_id)
    return release, sae_id


def check_sae_folder(folder: str | os.PathLike) -> dict[str, Any]:
    """Check a saved SAE folder: ``cfg.json`` is a JSON object with integer ``d_in``/``d_sae``, and the weights
    file is complete and holds ``W_enc`` [d_in, d_sae] and ``W_dec`` [d_sae, ...] (and ``b_enc`` [d_sae] if any).

    Returns the config. Raises `ModelLoadError` (missing or unreadable files) or `SiteMismatchError` (a config
    that does not match its weights), naming the file and what was expected.
    """
    folder = Path(folder)
    cfg_path, weights = folder / CFG_FILE, folder / WEIGHTS_FILE
    saved_by = "an SAE saved by sae-lens (cfg.json and sae_weights.safetensors), e.g. from `personas train-sae`"
    if not cfg_path.is_file():
        raise ModelLoadError(f"the folder {str(folder)!r} has no {CFG_FILE}; expected {saved_by}.")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(
            f"{str(cfg_path)!r} is not valid JSON ({exc}); expected the config sae-lens writes. Restore it, or "
            "save the SAE again (sae.save_model(folder))."
        ) from exc
    if not isinstance(cfg, dict):
        raise ModelLoadError(f"{str(cfg_path)!r} holds a JSON {type(cfg).__name__}; expected an object (the SAE config).")
    bad = [k for k in ("d_in", "d_sae") if not isinstance(cfg.get(k), int) or isinstance(cfg.get(k), bool)
           or cfg[k] < 1]
    if bad:
        raise ModelLoadError(
            f"{str(cfg_path)!r} lacks positive integer {bad} (got {[cfg.get(k) for k in bad]}); expected the SAE's "
            "input width d_in and number of latents d_sae."
        )
    metadata = cfg.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise ModelLoadError(f"{str(cfg_path)!r}: 'metadata' is a {type(metadata).__name__}; expected an object.")
    if not weights.is_file():
        raise ModelLoadError(f"the folder {str(folder)!r} has no {WEIGHTS_FILE}; expected {saved_by}.")
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="np") as handle:
            shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    except Exception as exc:  # safetensors raises its own error type for a truncated or foreign file
        raise ModelLoadError(
            f"{str(weights)!r} is not a complete safetensors file ({type(exc).__name__}: {exc}); it may be truncated "
            "(an interrupted copy or download). Copy or save the SAE again."
        ) from exc
    sizes = {"d_in": cfg["d_in"], "d_sae": cfg["d_sae"]}
    problems = []
    for name, (dims, required) in _SHAPES.items():
        if name not in shapes:
            if required:
                problems.append(f"{name} is missing")
            continue
        found = shapes[name]
        expected = [sizes[d] if d else found[i] if i < len(found) else "any" for i, d in enumerate(dims)]
        if list(found) != expected:
            problems.append(f"{name} has shape {list(found)}, expected {expected}")
    if problems:
        raise SiteMismatchError(
            f"the SAE in {str(folder)!r} does not match its config (d_in={cfg['d_in']}, d_sae={cfg['d_sae']}): "
            + "; ".join(problems) + f". Weights found: {dict(sorted(shapes.items()))}. The cfg.json and "
            f"{WEIGHTS_FILE} come from different SAEs; save the SAE again."
        )
    return cfg


def load_sae(spec: str | os.PathLike | Any = "default", *, device="cpu", dtype="float32", model: str | None = None) -> Any:
    """Load an SAE from a spec (see the module docstring) or pass a loaded sae-lens SAE through.

    The spec is checked first (`check_sae_spec`), so a wrong folder fails with a clear error before sae-lens runs.
    """
    if not isinstance(spec, (str, os.PathLike)):
        return spec
    resolved = check_sae_spec(spec, model)
    if resolved is None:
        raise PersonasError(f"SAE spec {str(spec)!r} names no SAE to load; pass a folder, 'RELEASE:SAE_ID' or 'default'.")
    torch_device = resolve_device(device)
    dtype_name = str(resolve_dtype(dtype, torch_device)).removeprefix("torch.")
    with quiet_third_party():  # importing sae-lens warns about TransformerLens deprecations
        from sae_lens import SAE

    if isinstance(resolved, Path):
        try:
            with quiet_third_party():
                return SAE.load_from_disk(str(resolved), device=str(torch_device), dtype=dtype_name)
        except PersonasError:
            raise
        except Exception as exc:  # what sae-lens raises for a config it cannot use is not documented
            raise ModelLoadError(
                f"sae-lens could not load the SAE in {str(resolved)!r}: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}. Expected a folder saved by sae-lens; check its "
                f"{CFG_FILE} (architecture, dtype) or save the SAE again."
            ) from exc
    release, sae_id = resolved
    try:
        with quiet_third_party(), warnings.catch_warnings():
            # gpt2-small-res-jb and others ask for center_writing_weights, which HookedTransformer.from_pretrained
            # (how load_model opens official names) already applies; the hint would only confuse
            warnings.filterwarnings("ignore", message=r"\s*This SAE has non-empty model_from_pretrained_kwargs")
            return SAE.from_pretrained(release, sae_id, device=str(torch_device), dtype=dtype_name)
    except Exception as exc:
        raise hub_error("SAE", str(spec), exc) from exc


def release_config(release: str, sae_id: str) -> dict[str, Any]:
    """The sae-lens config of a pretrained SAE (``d_in``, ``d_sae``, architecture, ``metadata.hook_name`` and
    ``model_name``) without its weights: only the release's config file is read (from the Hugging Face cache when
    offline), through the release's own conversion (``dictionary_learning_1``, Gemma Scope...)."""
    _check_release(release, sae_id)
    with quiet_third_party():
        from sae_lens.loading.pretrained_sae_loaders import load_sae_config_from_huggingface

    try:
        with quiet_third_party():
            cfg = load_sae_config_from_huggingface(release, sae_id, device="cpu")
    except Exception as exc:
        raise hub_error("the config of SAE", f"{release}:{sae_id}", exc) from exc
    meta = cfg.get("metadata") or {}
    for key in ("hook_name", "model_name"):
        cfg.setdefault(key, meta.get(key))
    return cfg


def _check_release(release: str, sae_id: str) -> None:
    """Fail early, listing valid choices, when a release or SAE id is unknown to sae-lens."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    directory = get_pretrained_saes_directory()
    if release not in directory:
        close = [r for r in directory if release.split("-")[0] in r][:10]
        raise PersonasError(
            f"{release!r} is not a sae-lens pretrained release. Similar releases: {close or sorted(directory)[:10]}. "
            "See the sae-lens pretrained SAE table for all releases."
        )
    ids = directory[release].saes_map
    if sae_id not in ids:
        raise PersonasError(
            f"{sae_id!r} is not an SAE id of release {release!r}; valid ids include {sorted(ids)[:12]}"
            f"{' ...' if len(ids) > 12 else ''}."
        )


def sae_info(sae: Any, spec: Any = None) -> dict[str, Any]:
    """What an SAE is, for manifests: architecture, width, site, model and where it came from.

    sae-lens 6 keeps neither the release nor the SAE id in a pretrained SAE's metadata: a ``"RELEASE:SAE_ID"``
    ``spec`` supplies them.
    """
    meta = sae.cfg.metadata
    release = meta.release if "release" in meta else None
    sae_id = meta.sae_id if "sae_id" in meta else None
    if release is None and isinstance(spec, str) and ":" in spec and not os.path.exists(spec):
        release, sae_id = spec.split(":", 1)
    return {
        "architecture": sae.cfg.architecture(),
        "d_in": int(sae.cfg.d_in),
        "d_sae": int(sae.cfg.d_sae),
        "hook_name": meta.hook_name,
        "model_name": meta.model_name,
        "release": release,
        "sae_id": sae_id,
        "neuronpedia_id": meta.neuronpedia_id if "neuronpedia_id" in meta else None,
        "dtype": str(sae.cfg.dtype),
    }


def sae_entry(sae: Any, spec: Any) -> dict[str, Any]:
    """A manifest's ``sae`` entry: the spec as given and `sae_info` (release and SAE id read from a
    ``"RELEASE:SAE_ID"`` spec where the SAE's metadata lacks them)."""
    return {"spec": str(spec), **sae_info(sae, str(spec))}


def same_model(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return True
    a_name, b_name = (str(x).rstrip("/").split("/")[-1].lower() for x in (a, b))
    if a_name == b_name:
        return True
    try:
        from transformer_lens.loading_from_pretrained import get_official_model_name

        return get_official_model_name(a) == get_official_model_name(b)
    except (ValueError, KeyError):
        return False


def check_site(sae: Any, hook: str, model: ModelHandle | None = None, *, allow_model_mismatch: bool = False) -> None:
    """Raise `SiteMismatchError` unless the SAE was made for this hook, this width and (when known) this model."""
    meta = sae.cfg.metadata
    problems = []
    if meta.hook_name and meta.hook_name != hook:
        problems.append(f"it reads hook {meta.hook_name!r}, not {hook!r}")
    if model is not None:
        if int(sae.cfg.d_in) != model.d_model:
            problems.append(f"its d_in is {sae.cfg.d_in} but the model's d_model is {model.d_model}")
        if not allow_model_mismatch and not same_model(meta.model_name, model.model_id):
            problems.append(f"it was trained on model {meta.model_name!r}, not {model.model_id!r}")
    if problems:
        raise SiteMismatchError(
            "the SAE does not fit this site: " + "; ".join(problems) + ". Use an SAE trained on this model's "
            f"{hook!r}, read the hook the SAE was trained on (hook={meta.hook_name!r}), or, for a model saved under "
            "another name, pass allow_model_mismatch=True."
        )


def encode(sae: Any, activations: torch.Tensor, *, batch_tokens: int = 8192) -> torch.Tensor:
    """SAE latent activations for [n_tokens, d_in] activations, encoded in chunks of ``batch_tokens``."""
    import torch

    _check_activation_shape(sae, activations)
    param = next(iter(sae.parameters()))
    chunks = []
    with torch.no_grad():
        for lo in range(0, activations.shape[0], batch_tokens):
            chunk = activations[lo : lo + batch_tokens].to(device=param.device, dtype=param.dtype)
            chunks.append(sae.encode(chunk).float())
    if not chunks:
        return torch.zeros(0, sae.cfg.d_sae, device=param.device)
    return torch.cat(chunks)


@dataclass
class SparseCodes:
    """SAE codes of ``n_rows`` tokens kept sparse: the non-zero ``(row, col, value)`` triples, rows ascending.

    Tensors stay on the device they were computed on; ``to_csr`` gives a scipy CSR matrix on the host.
    """

    rows: torch.Tensor
    cols: torch.Tensor
    values: torch.Tensor
    n_rows: int
    n_cols: int

    def to_csr(self, row_order: np.ndarray | None = None) -> scipy.sparse.csr_matrix:
        """A [n_rows, n_cols] float32 CSR matrix of the codes (``row_order``: new row index of each old row)."""
        import scipy.sparse

        rows = self.rows.cpu().numpy()
        if row_order is not None:
            rows = np.asarray(row_order)[rows]
        return scipy.sparse.csr_matrix(
            (self.values.cpu().numpy().astype(np.float32, copy=False), (rows, self.cols.cpu().numpy())),
            shape=(self.n_rows, self.n_cols),
        )


class ReconstructionStats:
    """Running totals of an SAE's reconstruction over tokens: explained variance, mean L0, dead latents.

    Explained variance is ``1 - sum |x - x_hat|^2 / sum |x - mean(x)|^2`` over the tokens measured (the mean over
    all of them), as sae-lens reports it; a latent is dead when it fired on none of the tokens seen.

    L0 and dead latents read the codes the encoder already made, so they cover every token at no extra cost. The
    explained variance needs a decode; with ``sample_tokens`` (and ``total_tokens``, the number of tokens that will
    be seen) only a seeded sample of that many token positions is decoded (`sample_positions`), so measuring the
    fit never costs a second full pass over the SAE. Without them every token is decoded.
    """

    def __init__(self, d_sae: int, *, sample_tokens: int | None = None, total_tokens: int | None = None,
                 seed: int = 0) -> None:
        self.n = 0
        self.n_ev = 0
        self.sse = 0.0
        self.sum_sq = 0.0
        self.sum_x: np.ndarray | None = None
        self.l0_sum = 0
        self.d_in = 0
        self.counts = np.zeros(int(d_sae), dtype=np.int64)  # tokens each latent fired on
        self.seed = int(seed)
        self.sample_tokens = None if sample_tokens is None else int(sample_tokens)
        self._sample: np.ndarray | None = None
        if sample_tokens is not None:
            if total_tokens is None:
                raise PersonasError("ReconstructionStats(sample_tokens=...) also needs total_tokens: the number of "
                                    "tokens that will be seen, to draw the sample from.")
            if sample_tokens < 0:
                raise PersonasError(f"ReconstructionStats(sample_tokens={sample_tokens}); expected >= 0 tokens (0: "
                                    "no explained variance), or None for all of them.")
            if total_tokens > sample_tokens:
                self._sample = (sample_positions(int(total_tokens), int(sample_tokens), self.seed) if sample_tokens
                                else np.zeros(0, dtype=np.int64))

    def update(self, x: torch.Tensor, codes: torch.Tensor, decode: Any,
               active_latents: torch.Tensor | None = None) -> None:
        """Add a chunk: activations [n, d_in], its codes [n, d_sae], and ``decode`` (codes -> reconstruction)
        or the reconstruction [n, d_in] itself. Only the chunk's sampled rows are decoded. ``active_latents``: the
        column index of every non-zero code, when the caller has already found them (no second dense pass)."""
        import torch

        lo, n = self.n, int(x.shape[0])
        self.n += n
        if active_latents is None:
            active_latents = (codes != 0).nonzero(as_tuple=True)[1]
        self.l0_sum += int(active_latents.numel())
        self.d_in = int(x.shape[1])
        self.counts += np.bincount(active_latents.cpu().numpy(), minlength=self.counts.size)
        if self._sample is not None:
            rows = self._sample[np.searchsorted(self._sample, lo):np.searchsorted(self._sample, lo + n)] - lo
            if rows.size == 0:
                return
            index = torch.as_tensor(rows, device=x.device)
            x, codes = x[index], codes[index]
            x_hat = decode(codes) if callable(decode) else decode[index]
        else:
            x_hat = decode(codes) if callable(decode) else decode
        x64, err = x.double(), (x.double() - x_hat.double())
        self.n_ev += int(x.shape[0])
        self.sse += float((err * err).sum())
        self.sum_sq += float((x64 * x64).sum())
        part = x64.sum(0).cpu().numpy()
        self.sum_x = part if self.sum_x is None else self.sum_x + part

    def summary(self, dense_threshold: float | None = None) -> dict[str, float | int | None]:
        """``explained_variance``, ``mse`` (per element), ``l0`` (mean active latents per token),
        ``dead_fraction``, ``n_tokens``, and ``ev_tokens`` / ``ev_sample_seed``: how many tokens the explained
        variance was measured on, and the seed of their sample (None when every token was decoded). With
        ``dense_threshold``, also ``dense_fraction``: latents active on more than that fraction of the tokens."""
        out: dict[str, float | int | None] = {
            "explained_variance": None, "mse": None, "l0": None, "dead_fraction": None, "n_tokens": self.n,
            "ev_tokens": self.n_ev, "ev_sample_seed": self.seed if self._sample is not None else None}
        if self.n:
            out.update(l0=self.l0_sum / self.n, dead_fraction=float((self.counts == 0).mean()))
            if dense_threshold is not None:
                out["dense_fraction"] = float((self.counts / self.n > dense_threshold).mean())
        if self.n_ev and self.sum_x is not None:
            total = self.sum_sq - float(self.sum_x @ self.sum_x) / self.n_ev
            out.update(explained_variance=float(1.0 - self.sse / total) if total > 0 else None,
                       mse=self.sse / (self.n_ev * self.d_in))
        return out


def sample_positions(total: int, size: int, seed: int = 0) -> np.ndarray:
    """``size`` distinct positions of ``range(total)``, sorted, drawn with ``seed`` (the same draw every run)."""
    if size < 1:
        raise PersonasError(f"a sample of {size} tokens was asked for; expected at least 1 (or None for all tokens).")
    return np.sort(np.random.default_rng(seed).choice(total, size=min(size, total), replace=False))


def encode_sparse(sae: Any, activations: torch.Tensor, *, batch_tokens: int = 8192,
                  stats: ReconstructionStats | None = None) -> SparseCodes:
    """SAE codes of [n_tokens, d_in] activations as non-zero triples: no dense [n_tokens, d_sae] matrix is kept.

    Each chunk of ``batch_tokens`` rows is encoded densely (one chunk at a time) and reduced to its non-zeros at
    once, so memory grows with the non-zeros (about k per token for a TopK SAE), not with ``n_tokens * d_sae``.
    With ``stats``, each chunk's codes (and the reconstruction of its sampled rows) are added to its running totals.
    """
    import torch

    _check_activation_shape(sae, activations)
    param = next(iter(sae.parameters()))
    rows, cols, values = [], [], []
    with torch.no_grad():
        for lo in range(0, activations.shape[0], batch_tokens):
            chunk = activations[lo : lo + batch_tokens].to(device=param.device, dtype=param.dtype)
            codes = sae.encode(chunk)
            r, c = codes.nonzero(as_tuple=True)
            if stats is not None:
                stats.update(chunk, codes, sae.decode, active_latents=c)
            rows.append(r + lo)
            cols.append(c)
            values.append(codes[r, c].float())
    if not rows:
        empty = torch.zeros(0, dtype=torch.long, device=param.device)
        return SparseCodes(empty, empty, torch.zeros(0, device=param.device), 0, int(sae.cfg.d_sae))
    return SparseCodes(torch.cat(rows), torch.cat(cols), torch.cat(values), int(activations.shape[0]),
                       int(sae.cfg.d_sae))


def _check_activation_shape(sae: Any, activations: torch.Tensor) -> None:
    if activations.ndim != 2 or activations.shape[1] != sae.cfg.d_in:
        raise SiteMismatchError(
            f"expected activations of shape [n_tokens, {sae.cfg.d_in}] for this SAE, got {tuple(activations.shape)}."
        )


def sae_identity(sae: Any, spec: Any = None, model: str | None = None) -> dict[str, Any]:
    """What a run records of the SAE whose latent indices it reports: the weights' hash (`sae_fingerprint`), their
    dtype, a small dtype-tolerant `weight_signature`, and, when ``spec`` names a shipped SAE (``"default"``, for
    ``model``, included), its folder name, so that the indices stay tied to that SAE after the default changes
    (`check_sae_identity`)."""
    shipped = None
    if isinstance(spec, (str, os.PathLike)) and str(spec).lower() != "none":
        try:
            path = check_sae_spec(spec, model)
        except PersonasError:
            path = None
        if isinstance(path, Path) and path.resolve().parent == (data_dir() / "saes").resolve():
            shipped = path.name
    return {"weights_sha256": sae_fingerprint(sae)["weights_sha256"], "shipped": shipped,
            "dtype": _sae_dtype(sae), "signature": weight_signature(sae)}


#: `weight_signature` reads this many decoder rows (spread over the latents) at this many spread dimensions.
_SIGNATURE_ROWS, _SIGNATURE_DIMS = 32, 4


def _sae_dtype(sae: Any) -> str | None:
    param = next(iter(sae.parameters()), None)
    return None if param is None else str(param.dtype).removeprefix("torch.")


def weight_signature(sae: Any) -> list[float] | None:
    """A dtype-tolerant sample of an SAE's weights: 32 decoder rows spread over the latents (the first and the last
    included), 4 spread dimensions each, as float32 values. Two SAEs trained apart differ in it far beyond half
    precision's rounding; the same SAE at float32 and at bfloat16 agrees to about 0.4%. None without a decoder."""
    import torch

    w = getattr(sae, "W_dec", None)
    if not isinstance(w, torch.Tensor) or w.ndim != 2 or w.numel() == 0:
        return None
    rows = torch.linspace(0, w.shape[0] - 1, min(_SIGNATURE_ROWS, w.shape[0])).round().long()
    dims = torch.linspace(0, w.shape[1] - 1, min(_SIGNATURE_DIMS, w.shape[1])).round().long()
    picked = w.detach()[rows.to(w.device)][:, dims.to(w.device)].to("cpu", torch.float32)
    return [float(f"{v:.6g}") for v in picked.reshape(-1).tolist()]


def _signatures_agree(recorded: Sequence[float], found: Sequence[float]) -> bool:
    try:
        a, b = np.asarray(recorded, dtype=np.float64), np.asarray(found, dtype=np.float64)
    except (TypeError, ValueError):  # a hand-edited record: not a list of numbers, so no match
        return False
    if a.shape != b.shape or not np.isfinite(a).all():
        return False
    scale = float(np.abs(a).max()) if a.size else 0.0
    return bool(np.allclose(b, a, rtol=0.02, atol=0.01 * scale))  # bfloat16 keeps 8 bits: ~0.4% per value


def recorded_sae_spec(recorded: Any, spec: Any) -> Any:
    """The SAE to read recorded latent indices with: ``spec``, except that ``"default"`` becomes the shipped SAE
    named in ``recorded`` (what `sae_identity` wrote), as long as it still ships: the indices belong to that one,
    even after the default changed."""
    shipped = recorded.get("shipped") if isinstance(recorded, dict) else None
    if spec == "default" and shipped and shipped in shipped_saes():
        logger.info("reading the recorded latents with the SAE they were recorded with, %s", shipped)
        return shipped
    return spec


def check_sae_identity(recorded: Any, sae: Any, what: str) -> None:
    """Refuse latent indices recorded for another SAE: ``recorded`` is what `sae_identity` wrote (None: an older
    record without it, accepted), ``sae`` the SAE about to read them, ``what`` names the record in the message.

    Both at float32 (older records name no dtype: float32): the weights' hashes must match. Either at another dtype
    (an accelerator's bfloat16 or float16 SAE, whose rounded weights hash differently): the `weight_signature`s must
    agree within half precision's rounding; a record without one cannot be checked, and a warning says so."""
    if not isinstance(recorded, dict) or not recorded.get("weights_sha256"):
        return
    dtype, recorded_dtype = _sae_dtype(sae), recorded.get("dtype") or "float32"
    name = recorded.get("shipped")
    hint = (f"pass --sae {name} (the shipped SAE it used)" if name else "pass --sae with the SAE it used")
    if dtype in (None, "float32") and recorded_dtype == "float32":
        found = sae_fingerprint(sae)["weights_sha256"]
        if found == recorded["weights_sha256"]:
            return
        raise SiteMismatchError(
            f"{what} lists latents of another SAE (weights sha256 {recorded['weights_sha256'][:12]}); the SAE loaded "
            f"here is {found[:12]}, so its latent indices would name other features. {hint}, or --latents."
        )
    signature = recorded.get("signature")
    if not signature:
        logger.warning("%s: the SAE runs at %s and the record (made at %s) has no weight signature, so whether it "
                       "is the SAE recorded is not checked", what, dtype, recorded_dtype)
        return
    found_signature = weight_signature(sae)
    if found_signature is None or not _signatures_agree(signature, found_signature):
        raise SiteMismatchError(
            f"{what} lists latents of another SAE: the decoder weights of the SAE loaded here (at {dtype}) differ from "
            f"those recorded (at {recorded_dtype}) by more than half precision rounds, so its latent indices would "
            f"name other features. {hint}, or --latents."
        )


def sae_fingerprint(sae: Any, spec: Any = None) -> dict[str, Any]:
    """What identifies an SAE in a cache fingerprint: `sae_info` plus a hash of (a sample of) its weights."""
    import torch

    digest = hashlib.sha256()
    sample = 1 << 20
    for name, tensor in sorted(sae.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        part = flat if flat.numel() <= 2 * sample else torch.cat([flat[:sample], flat[-sample:]])
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(part.to("cpu", torch.float32).contiguous().numpy().tobytes())
    return {"spec": spec if isinstance(spec, str) else "in-memory", **sae_info(sae, spec),
            "weights_sha256": digest.hexdigest()}
