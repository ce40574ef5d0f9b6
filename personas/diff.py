"""Model diffing: which SAE latents rise when the same conversations go through a base model and its fine-tune.

As in the persona-features work, the same prompts and responses (teacher-forced: the same response text through
both models) are captured at one site of each model, encoded with the *same* SAE, pooled per response over
response tokens, and every latent is tested for a change with paired statistics, one pair per conversation:

* ``mean_base``, ``mean_finetuned``, ``mean_diff`` (finetuned minus base), ``sd_diff``,
  ``effect_size`` = mean_diff / sd_diff (the paired standardised mean difference, d_z),
* ``frac_increased`` / ``frac_decreased``: share of conversations where the latent went up / down,
* ``p_value``: two-sided Wilcoxon signed-rank test (zero differences dropped, normal approximation with tie
  correction), or the paired t-test with ``test="t"``; ``q_value``: Benjamini-Hochberg over the latents tested
  (latents that never change get p = 1).

Rows are sorted by ``mean_diff``, largest increase first (ties: smaller p-value, then lower index); ``key`` can
sort by ``effect_size`` or by ``p_value`` among increases instead.

Prompts without responses are answered first by one of the models (``responses_from``, default the fine-tune), and
that text is then teacher-forced through both.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from personas.config import DIFF_KEYS, CaptureConfig, DiffConfig, SAEConfig
from personas.errors import DataError, PersonasError, SiteMismatchError
from personas.provenance import atomic_write_text, library_versions, now, output_dir, write_csv, write_json

logger = logging.getLogger(__name__)

__all__ = ["DiffConfig", "DiffResult", "Prompts", "diff_features", "diff_models", "load_prompts"]

DIFF_FILE = "diff.csv"
MANIFEST_FILE = "manifest.json"
_PROMPT_COLUMNS = ("prompt", "question", "user", "input")
_RESPONSE_COLUMNS = ("response", "answer", "completion", "output")



# ------------------------------------------------------------------------------------------------ prompts


@dataclass
class Prompts:
    """Prompts, and the responses to teacher-force when there are any; labels are not needed for diffing."""

    prompts: list[str]
    responses: list[str] | None
    ids: list[str]
    source: str
    extra: Any = field(default=None, repr=False)  # the other input columns (a DataFrame), e.g. labels

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def hash(self) -> str:
        digest = hashlib.sha256(b"personas.prompts.v1")
        responses = self.responses or [None] * len(self)
        for row in zip(self.ids, self.prompts, responses, strict=True):
            digest.update(json.dumps(row, ensure_ascii=False).encode("utf-8"))
        return digest.hexdigest()

    def summary(self) -> dict[str, Any]:
        return {"source": self.source, "n": len(self), "has_responses": self.responses is not None,
                "dataset_hash": self.hash}


def load_prompts(
    source: Any, *, prompt_column: str | None = None, response_column: str | None = None
) -> Prompts:
    """Read prompts (and responses, when present) without needing labels.

    ``source``: a ``.txt`` file (one prompt per line), a ``.jsonl``/``.json``/``.csv``/``.tsv``/``.parquet`` file, a
    DataFrame, a list of prompt strings, or a `personas.data.Responses`. Columns: ``prompt_column`` or the first of
    prompt/question/user/input; ``response_column`` or the first of response/answer/completion/output (optional);
    ``id`` when present. Rows with an empty prompt are an error; a file whose responses are all missing is read as
    prompts only.
    """
    import pandas as pd

    if type(source).__name__ == "Responses" and hasattr(source, "frame"):
        return Prompts(source.prompts, source.texts, source.ids, source.source, extra=source.frame)
    if isinstance(source, (list, tuple)):
        if not all(isinstance(p, str) for p in source):
            raise DataError("load_prompts got a list whose items are not all strings; expected a list of prompts.")
        return Prompts(list(source), None, [str(i) for i in range(len(source))], f"list ({len(source)} prompts)")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if not path.is_file():
            raise DataError(f"prompts file {str(path)!r} does not exist; expected a .txt, .jsonl, .csv or .parquet file.")
        suffix = path.suffix.lower()
        description = str(path.resolve())
        if suffix == ".txt":
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            if not lines:
                raise DataError(f"{path} has no prompts; expected one prompt per line.")
            return Prompts(lines, None, [str(i) for i in range(len(lines))], description)
        from personas.data import read_table

        frame = read_table(path)
    elif isinstance(source, pd.DataFrame):
        frame, description = source, f"DataFrame ({len(source)} rows)"
    else:
        raise DataError(f"load_prompts got a {type(source).__name__}; expected a file path, a DataFrame, a list of "
                        "prompts or a Responses.")
    return _prompts_from_frame(frame, description, prompt_column, response_column)


def _prompts_from_frame(frame, description: str, prompt_column: str | None, response_column: str | None) -> Prompts:
    def pick(explicit: str | None, names: Sequence[str], role: str, required: bool) -> str | None:
        if explicit is not None:
            if explicit not in frame.columns:
                raise DataError(f"{description} has no column {explicit!r} for the {role}; columns: {list(frame.columns)}.")
            return explicit
        for name in names:
            if name in frame.columns:
                return name
        if required:
            raise DataError(f"{description} has no {role} column; expected one of {list(names)} (columns: "
                            f"{list(frame.columns)}). Name it with prompt_column=.")
        return None

    p_col = pick(prompt_column, _PROMPT_COLUMNS, "prompt", True)
    r_col = pick(response_column, _RESPONSE_COLUMNS, "response", False)
    prompts = ["" if _missing(v) else str(v) for v in frame[p_col].tolist()]
    empty = [i for i, p in enumerate(prompts) if not p.strip()]
    if empty:
        raise DataError(f"{description}: rows {empty[:10]} have an empty {p_col!r}; every row needs a prompt.")
    responses = None
    if r_col is not None:
        values = frame[r_col].tolist()
        missing = [i for i, v in enumerate(values) if _missing(v) or not str(v).strip()]
        if len(missing) == len(values):
            logger.info("%s: column %r is empty; reading prompts only", description, r_col)
        elif missing:
            raise DataError(f"{description}: rows {missing[:10]} have no {r_col!r} while others do; give every row a "
                            "response, or none (then responses are generated).")
        else:
            responses = [str(v) for v in values]
    ids = [str(v) for v in frame["id"].tolist()] if "id" in frame.columns else [str(i) for i in range(len(frame))]
    return Prompts(prompts, responses, ids, description, extra=frame)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


# ------------------------------------------------------------------------------------------------ statistics


def _wilcoxon_columns(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Wilcoxon signed-rank test of every column of the paired differences ``d`` [n, m]; zeros dropped,
    normal approximation with tie correction. Columns with no non-zero difference get statistic 0, p = 1."""
    from scipy import stats

    n_cols = d.shape[1]
    stat = np.zeros(n_cols)
    p = np.ones(n_cols)
    tested = np.flatnonzero((d != 0).any(axis=0))
    if tested.size:
        res = stats.wilcoxon(d[:, tested], axis=0, zero_method="wilcox", method="approx", correction=False)
        stat[tested] = np.asarray(res.statistic, dtype=np.float64)
        p[tested] = np.nan_to_num(np.asarray(res.pvalue, dtype=np.float64), nan=1.0)
    return stat, p


def _t_columns(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Paired t-test of every column of ``d``; a constant non-zero difference gets p = 0, no difference p = 1."""
    from scipy import special

    n = d.shape[0]
    mean = d.mean(axis=0)
    sd = d.std(axis=0, ddof=1) if n > 1 else np.zeros(d.shape[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean / (sd / np.sqrt(n))
    p = np.where(sd > 0, 2.0 * special.stdtr(max(n - 1, 1), -np.abs(np.nan_to_num(t))), np.where(mean == 0, 1.0, 0.0))
    with np.errstate(invalid="ignore"):
        t = np.where(sd > 0, t, np.where(mean == 0, 0.0, np.sign(mean) * np.inf))
    return t, np.clip(p, 0.0, 1.0)


def diff_features(
    base: Any,
    finetuned: Any,
    *,
    test: str = "wilcoxon",
    key: str = "mean_diff",
    alpha: float = 0.05,
    block: int = 4096,
) -> Any:
    """Paired comparison of every column of two [n, m] feature matrices (rows = the same conversations).

    Returns a DataFrame, one row per column, sorted by ``key`` (see the module docstring for the columns).
    Inputs may be numpy arrays or scipy sparse matrices; columns are processed in blocks of ``block``.
    """
    import pandas as pd
    import scipy.sparse as sp

    from personas.scoring import benjamini_hochberg

    if base.shape != finetuned.shape or len(base.shape) != 2:
        raise DataError(f"base features {base.shape} and fine-tuned features {finetuned.shape} must be 2-D and of "
                        "one shape: the same conversations encoded by the same SAE.")
    if test not in ("wilcoxon", "t"):
        raise PersonasError(f"test={test!r}; expected 'wilcoxon' or 't'.")
    if key not in DIFF_KEYS:
        raise PersonasError(f"key={key!r}; expected one of {DIFF_KEYS}.")
    n, m = (int(s) for s in base.shape)
    if n < 2:
        raise DataError(f"paired statistics need at least 2 conversations; got {n}.")
    base_c = base.tocsc() if sp.issparse(base) else np.asarray(base)
    ft_c = finetuned.tocsc() if sp.issparse(finetuned) else np.asarray(finetuned)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in (
        "mean_base", "mean_finetuned", "mean_diff", "sd_diff", "frac_increased", "frac_decreased",
        "frac_active_base", "frac_active_finetuned", "statistic", "p_value")}
    for j0 in range(0, m, block):
        j1 = min(j0 + block, m)
        b = base_c[:, j0:j1]
        f = ft_c[:, j0:j1]
        b = b.toarray() if sp.issparse(b) else b
        f = f.toarray() if sp.issparse(f) else f
        b = b.astype(np.float64)
        f = f.astype(np.float64)
        d = f - b
        cols["mean_base"].append(b.mean(0))
        cols["mean_finetuned"].append(f.mean(0))
        cols["mean_diff"].append(d.mean(0))
        cols["sd_diff"].append(d.std(0, ddof=1))
        cols["frac_increased"].append((d > 0).mean(0))
        cols["frac_decreased"].append((d < 0).mean(0))
        cols["frac_active_base"].append((b != 0).mean(0))
        cols["frac_active_finetuned"].append((f != 0).mean(0))
        stat, p = _wilcoxon_columns(d) if test == "wilcoxon" else _t_columns(d)
        cols["statistic"].append(stat)
        cols["p_value"].append(p)
    out = {k: np.concatenate(v) for k, v in cols.items()}
    with np.errstate(divide="ignore", invalid="ignore"):
        effect = np.where(out["sd_diff"] > 0, out["mean_diff"] / out["sd_diff"],
                          np.where(out["mean_diff"] == 0, 0.0, np.sign(out["mean_diff"]) * np.inf))
    frame = pd.DataFrame({"feature": np.arange(m), **{k: out[k] for k in (
        "mean_base", "mean_finetuned", "mean_diff", "sd_diff")}, "effect_size": effect,
        **{k: out[k] for k in ("frac_increased", "frac_decreased", "frac_active_base", "frac_active_finetuned",
                               "statistic", "p_value")}})
    frame["q_value"] = benjamini_hochberg(frame["p_value"].to_numpy())
    frame["significant"] = frame["q_value"] < alpha
    if key == "p_value":  # most significant increases first, then decreases
        increase = frame["mean_diff"].to_numpy() > 0
        strength = -np.log10(np.maximum(frame["p_value"].to_numpy(), 1e-300))
        primary = np.where(increase, strength, frame["mean_diff"].to_numpy())
    else:
        primary = frame[key].to_numpy()
    order = np.lexsort((frame["feature"].to_numpy(), frame["p_value"].to_numpy(), -primary))
    frame = frame.iloc[order].reset_index(drop=True)
    frame.attrs.update({"test": test, "key": key, "alpha": alpha, "n_pairs": n})
    return frame


# ------------------------------------------------------------------------------------------------ the job


@dataclass
class DiffResult:
    """The latents that changed, what was compared, and the provenance written next to them."""

    table: Any  # DataFrame, one row per latent, sorted by the key
    manifest: dict[str, Any]
    base_features: Any = field(repr=False)
    finetuned_features: Any = field(repr=False)
    prompts: Prompts = field(repr=False)
    out_dir: Path | None = None

    def top(self, n: int = 20):
        return self.table.head(n)


def _check_pair(sae: Any, hook: str, base: Any, finetuned: Any, allow_model_mismatch: bool) -> None:
    from personas.saes import _same_model, check_site

    for name, handle in (("base", base), ("fine-tuned", finetuned)):
        try:
            check_site(sae, hook, handle, allow_model_mismatch=True)
        except SiteMismatchError as exc:
            raise SiteMismatchError(f"the {name} model {handle.model_id!r}: {exc}") from exc
    trained_on = sae.cfg.metadata.model_name
    if not allow_model_mismatch and trained_on and not (
        _same_model(trained_on, base.model_id) or _same_model(trained_on, finetuned.model_id)
    ):
        raise SiteMismatchError(
            f"the SAE was trained on model {trained_on!r}, which is neither the base {base.model_id!r} nor the "
            f"fine-tune {finetuned.model_id!r}. Use an SAE of the base model, or pass allow_model_mismatch=True "
            "(--allow-model-mismatch) when the base is that model saved under another name."
        )


def diff_models(
    base: Any,
    finetuned: Any,
    prompts: Any,
    sae: Any,
    *,
    hook: str | None = None,
    capture: CaptureConfig | None = None,
    config: DiffConfig | None = None,
    out: str | Path | None = None,
    allow_model_mismatch: bool | None = None,
    progress: bool = True,
) -> DiffResult:
    """Rank SAE latents by how much they rise from ``base`` to ``finetuned`` on the same conversations.

    Args:
        base, finetuned: TransformerLens model names, local folders, or loaded models (`ModelHandle` or TL models).
        prompts: anything `load_prompts` takes; responses are teacher-forced through both models, and generated by
            ``config.responses_from`` first when there are none.
        sae: a loaded sae-lens SAE, a spec string or an `SAEConfig` (the same SAE encodes both models).
        hook: the site; default the SAE's hook. Both models must have it, with the SAE's width.
        capture: tokenization and pooling (`CaptureConfig`; its ``model`` is ignored).
        config: test, sort key, FDR level (`DiffConfig`).
        out: folder for ``diff.csv`` and ``manifest.json``.
        allow_model_mismatch: accept an SAE whose recorded model is neither of the two (hook and width must still
            match); default: the `SAEConfig` field when ``sae`` is one, else False. The fine-tune itself never needs
            it: an SAE of the base model is expected to be applied to its fine-tune.
    """
    from personas.capture import capture as run_capture
    from personas.capture import tokenize_conversations
    from personas.models import as_model_handle, load_model
    from personas.saes import load_sae, sae_info

    config = config or DiffConfig()
    capture_cfg = capture or CaptureConfig()
    data = load_prompts(prompts)

    def _load(model):
        if isinstance(model, (str, os.PathLike)):
            return load_model(str(model), device=capture_cfg.device, dtype=capture_cfg.dtype)
        return as_model_handle(model)

    base_h, ft_h = _load(base), _load(finetuned)
    if isinstance(sae, SAEConfig):
        sae_spec, encode_batch = sae.sae, sae.encode_batch_tokens
        if allow_model_mismatch is None:
            allow_model_mismatch = bool(getattr(sae, "allow_model_mismatch", False))
    else:
        sae_spec, encode_batch = (str(sae) if isinstance(sae, (str, os.PathLike)) else "in-memory"), 8192
    if sae_spec in (None, "none"):
        raise PersonasError("model diffing needs an SAE (sae='none' was given): latents are compared across models.")
    sae_obj = load_sae(sae_spec if sae_spec != "in-memory" else sae, device=base_h.device, dtype=capture_cfg.dtype)
    hook = hook or capture_cfg.hook or sae_obj.cfg.metadata.hook_name
    base_h.check_hooks([hook])
    ft_h.check_hooks([hook])
    _check_pair(sae_obj, hook, base_h, ft_h, bool(allow_model_mismatch))

    responses = data.responses
    generated_by = None
    if responses is None:
        from personas.steer import generate

        source_h = ft_h if config.responses_from == "finetuned" else base_h
        logger.info("no responses given: generating them with the %s model", config.responses_from)
        responses = generate(source_h, data.prompts, max_new_tokens=config.max_new_tokens, config=capture_cfg,
                             progress=progress)
        generated_by = config.responses_from
        empty = [i for i, r in enumerate(responses) if not r.strip()]
        if empty:
            raise DataError(f"the {generated_by} model generated empty answers to prompts {empty[:10]}; give responses "
                            "in the prompts file, or raise max_new_tokens.")
    tb = tokenize_conversations(base_h, data.prompts, responses, capture_cfg)
    tf = tokenize_conversations(ft_h, data.prompts, responses, capture_cfg)
    differ = sum(a.input_ids != b.input_ids or a.start != b.start for a, b in zip(tb, tf, strict=True))
    if differ:
        logger.warning("%d of %d conversations tokenize differently in the two models (different tokenizers or chat "
                       "templates); latents are still pooled over each model's response tokens", differ, len(tb))

    captures = {}
    for name, handle in (("base", base_h), ("finetuned", ft_h)):
        # the SAE's model name was checked against the pair above; the fine-tune legitimately has another name
        captures[name] = run_capture(handle, data.prompts, responses, hooks=[hook], config=capture_cfg, sae=sae_obj,
                                     encode_batch_tokens=encode_batch, allow_model_mismatch=True, progress=progress)
    table = diff_features(captures["base"].features, captures["finetuned"].features, test=config.test,
                          key=config.key, alpha=config.alpha)
    manifest = {
        "kind": "personas.diff",
        "created_at": now(),
        "base": captures["base"].model,
        "finetuned": captures["finetuned"].model,
        "hook": hook,
        "sae": {"spec": str(sae_spec), **sae_info(sae_obj)},
        "prompts": {**data.summary(), "responses_generated_by": generated_by,
                    "n_tokenized_differently": int(differ)},
        "statistics": {"test": config.test, "key": config.key, "alpha": config.alpha, "n_pairs": len(data),
                       "n_latents": int(table.shape[0]), "n_significant": int(table["significant"].sum()),
                       "n_significant_increase": int((table["significant"] & (table["mean_diff"] > 0)).sum())},
        "config": {"diff": asdict(config), "capture": asdict(capture_cfg),
                   "allow_model_mismatch": bool(allow_model_mismatch)},
        "capture": {"base": captures["base"].provenance(), "finetuned": captures["finetuned"].provenance()},
        "versions": library_versions(),
    }
    if generated_by is not None:
        data = Prompts(data.prompts, responses, data.ids, data.source, data.extra)
    result = DiffResult(table, manifest, captures["base"].features, captures["finetuned"].features, data)
    if out is not None:
        result.out_dir = write_diff(result, out)
    return result


def write_diff(result: DiffResult, out: str | Path) -> Path:
    """Write ``diff.csv`` and ``manifest.json`` (atomically) into ``out``."""
    out = output_dir(out)
    result.manifest["files"] = {DIFF_FILE: write_csv(out / DIFF_FILE, result.table)}
    if result.manifest["prompts"].get("responses_generated_by"):
        import pandas as pd

        frame = pd.DataFrame({"id": result.prompts.ids, "prompt": result.prompts.prompts,
                              "response": result.prompts.responses})
        atomic_write_text(out / "responses.jsonl", frame.to_json(orient="records", lines=True, force_ascii=False))
        result.manifest["files"]["responses.jsonl"] = {"note": "generated answers that were teacher-forced"}
    write_json(out / MANIFEST_FILE, result.manifest)
    return out


# ------------------------------------------------------------------------------------------------ CLI


def _cmd_diff(args: argparse.Namespace) -> int:
    from personas.cli import config_from_args

    config = config_from_args(DiffConfig, args)
    capture_cfg = config_from_args(CaptureConfig, args)
    result = diff_models(
        args.base, args.finetuned, args.prompts, config_from_args(SAEConfig, args), hook=capture_cfg.hook,
        capture=capture_cfg, config=config, out=args.out, progress=not args.quiet,
    )
    m = result.manifest
    stats = m["statistics"]
    print(f"base {m['base']['model']} | fine-tuned {m['finetuned']['model']} | hook {m['hook']} | "
          f"SAE {m['sae']['spec']} | {stats['n_pairs']} conversations ({config.test} test)")
    print(f"latents: {stats['n_latents']} | significant changes (q < {config.alpha}): {stats['n_significant']}, "
          f"of which increases: {stats['n_significant_increase']}")
    columns = ["feature", "mean_base", "mean_finetuned", "mean_diff", "effect_size", "frac_increased", "p_value",
               "q_value"]
    view = result.table.head(config.top)[columns]
    formats = {c: "{:.3f}".format for c in columns if c not in ("feature", "p_value", "q_value")}
    formats.update({c: "{:.2e}".format for c in ("p_value", "q_value")})
    print(view.to_string(index=False, formatters=formats))
    if result.out_dir is not None:
        print(f"wrote {result.out_dir / DIFF_FILE} and {result.out_dir / MANIFEST_FILE}")
    return 0


def register_cli(subparsers: Any) -> None:
    from personas.cli import add_config_options

    p = subparsers.add_parser("diff", help="rank SAE latents by their increase from a base model to its fine-tune "
                              "on the same conversations (paired tests, q-values)")
    p.add_argument("--base", required=True, help="base model: TransformerLens name, Hugging Face id or local folder")
    p.add_argument("--finetuned", required=True, help="fine-tuned model: name, id or local folder")
    p.add_argument("--prompts", required=True, help="prompts (and responses): .txt, JSONL, CSV or Parquet")
    p.add_argument("--out", default="runs/diff", help="folder for diff.csv and manifest.json (default: runs/diff)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_options(p, DiffConfig)
    add_config_options(p, SAEConfig)
    add_config_options(p, CaptureConfig, skip=("model",))
    p.set_defaults(func=_cmd_diff)
