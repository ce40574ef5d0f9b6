"""Resolve, check and load SAEs with sae-lens, and check that one fits a model's site.

An SAE is named by a spec string:

* ``"default"``: the SAE `personas` trained and ships for the offline default model (``data/saes/``);
* the folder name of any SAE `personas` ships (`shipped_saes`), e.g. an earlier default kept under its own name;
* a folder written by sae-lens (``cfg.json`` + ``sae_weights.safetensors``), e.g. one from ``personas train-sae``;
* ``"RELEASE:SAE_ID"``: a pretrained sae-lens release, e.g. ``"gpt2-small-res-jb:blocks.8.hook_resid_pre"`` or
  ``"gemma-scope-2b-pt-res-canonical:layer_12/width_16k/canonical"``.

`check_sae_spec` checks a spec without loading anything heavy (a folder's ``cfg.json`` and the shapes in its
weights file's header, or a release's name in the sae-lens directory), so that jobs can fail on a wrong SAE in
milliseconds, before a model loads. `check_site` checks a loaded SAE against a model's hook. Training lives in
`personas.training`.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from personas.config import DEFAULT_MODEL
from personas.devices import resolve_device, resolve_dtype
from personas.errors import ModelLoadError, PersonasError, SiteMismatchError
from personas.logs import quiet_third_party
from personas.models import hub_error
from personas.models.offline import OFFLINE_MODELS, offline_model

if TYPE_CHECKING:
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


def same_model(a: str | None, b: str | None) -> bool:
    """Whether two model names mean one model (same last path part, or the same official TransformerLens name);
    an unknown name on either side is not a mismatch."""
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


#: `weight_signature` reads this many decoder rows (spread over the latents) at this many spread dimensions.
_SIGNATURE_ROWS, _SIGNATURE_DIMS = 32, 4
