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

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from personas.artifacts import (
    DIFF_FILE,
    MANIFEST_FILE,
    RESPONSES_FILE,
    atomic_write_text,
    check_output_dir,
    manifest_header,
    output_dir,
    write_csv,
    write_json,
)
from personas.capturing import capture as run_capture
from personas.capturing import tokenize_conversations
from personas.config import CaptureConfig, DiffConfig, SAEConfig
from personas.data.prompts import Prompts, load_prompts
from personas.devices import sae_dtype
from personas.errors import DataError, PersonasError, SiteMismatchError
from personas.logs import quiet_third_party
from personas.models import as_model_handle, load_model
from personas.saes import check_sae_spec, check_site, load_sae, sae_entry, same_model
from personas.scoring.paired import diff_features
from personas.steering import generate

logger = logging.getLogger(__name__)

__all__ = ["DiffResult", "diff_models", "write_diff"]


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
        """The ``n`` latents that rose most (by the sort key)."""
        return self.table.head(n)

    def __repr__(self) -> str:
        m, stats = self.manifest, self.manifest["statistics"]
        top = ", ".join(f"{int(r.feature)} ({r.mean_diff:+.3g})" for r in self.table.head(3).itertuples())
        out = "" if self.out_dir is None else f"; out={str(self.out_dir)!r}"
        return (f"DiffResult({m['base']['model']} -> {m['finetuned']['model']} at {m['hook']}, {stats['n_pairs']} "
                f"conversations, {stats['n_latents']} latents; {stats['n_significant']} significant changes "
                f"({stats['n_significant_increase']} increases) at q < {stats['alpha']}; top: {top}{out})")


def _check_pair(sae: Any, hook: str, base: Any, finetuned: Any, allow_model_mismatch: bool) -> None:
    for name, handle in (("base", base), ("fine-tuned", finetuned)):
        try:
            check_site(sae, hook, handle, allow_model_mismatch=True)
        except SiteMismatchError as exc:
            raise SiteMismatchError(f"the {name} model {handle.model_id!r}: {exc}") from exc
    trained_on = sae.cfg.metadata.model_name
    if not allow_model_mismatch and trained_on and not (
        same_model(trained_on, base.model_id) or same_model(trained_on, finetuned.model_id)
    ):
        raise SiteMismatchError(
            f"the SAE was trained on model {trained_on!r}, which is neither the base {base.model_id!r} nor the "
            f"fine-tune {finetuned.model_id!r}. Use an SAE of the base model, or pass allow_model_mismatch=True "
            "(--allow-model-mismatch) when the base is that model saved under another name."
        )


def _model_name(model: Any) -> str | None:
    """What names a model for ``sae="default"``: the name or folder given, or a loaded model's id."""
    if isinstance(model, (str, os.PathLike)):
        return str(model)
    return as_model_handle(model).model_id if model is not None else None


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
        sae: a loaded sae-lens SAE, a spec string or an `SAEConfig` (the same SAE encodes both models); diffing
            compares latents, so ``None`` / ``"none"`` is an error.
        hook: the site; default the SAE's hook. Both models must have it, with the SAE's width.
        capture: tokenization and pooling (`CaptureConfig`; its ``model`` is ignored).
        config: test, sort key, FDR level (`DiffConfig`).
        out: folder for ``diff.csv`` and ``manifest.json``.
        allow_model_mismatch: accept an SAE whose recorded model is neither of the two (hook and width must still
            match); default: the `SAEConfig` field when ``sae`` is one, else False. The fine-tune itself never needs
            it: an SAE of the base model is expected to be applied to its fine-tune.
    """

    config = config or DiffConfig()
    capture_cfg = capture or CaptureConfig()
    data = load_prompts(prompts)

    def _load(model):
        if isinstance(model, (str, os.PathLike)):
            return load_model(str(model), device=capture_cfg.device, dtype=capture_cfg.dtype)
        return as_model_handle(model)

    if isinstance(sae, SAEConfig):
        sae_spec, encode_batch = sae.sae, sae.encode_batch_tokens
        if allow_model_mismatch is None:
            allow_model_mismatch = bool(getattr(sae, "allow_model_mismatch", False))
    elif sae is None or isinstance(sae, (str, os.PathLike)):
        sae_spec, encode_batch = (None if sae is None else str(sae)), SAEConfig().encode_batch_tokens
    else:
        sae_spec, encode_batch = "in-memory", SAEConfig().encode_batch_tokens
    if sae_spec is None or str(sae_spec).lower() == "none":
        raise PersonasError(f"model diffing needs an SAE (sae={sae_spec!r} was given): latents are compared across "
                            "models. Pass sae='default', a folder, 'RELEASE:SAE_ID' or a loaded SAE.")
    if sae_spec != "in-memory":
        check_sae_spec(sae_spec, _model_name(base))  # a wrong SAE fails before two models load
    if out is not None:
        check_output_dir(out, "personas.diff")
    with quiet_third_party():
        base_h, ft_h = _load(base), _load(finetuned)
        sae_obj = load_sae(sae_spec if sae_spec != "in-memory" else sae, device=base_h.device, dtype=sae_dtype(capture_cfg.dtype, base_h.device),
                           model=base_h.model_id)
    hook = hook or capture_cfg.hook or sae_obj.cfg.metadata.hook_name
    base_h.check_hooks([hook])
    ft_h.check_hooks([hook])
    _check_pair(sae_obj, hook, base_h, ft_h, bool(allow_model_mismatch))

    responses = data.responses
    generated_by = None
    if responses is None:
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
        **manifest_header("personas.diff"),
        "base": captures["base"].model,
        "finetuned": captures["finetuned"].model,
        "hook": hook,
        "sae": sae_entry(sae_obj, sae_spec),
        "prompts": {**data.summary(), "responses_generated_by": generated_by,
                    "n_tokenized_differently": int(differ)},
        "statistics": {"test": config.test, "key": config.key, "alpha": config.alpha, "n_pairs": len(data),
                       "n_latents": int(table.shape[0]), "n_significant": int(table["significant"].sum()),
                       "n_significant_increase": int((table["significant"] & (table["mean_diff"] > 0)).sum())},
        "config": {"diff": asdict(config), "capture": asdict(capture_cfg),
                   "allow_model_mismatch": bool(allow_model_mismatch)},
        "capture": {"base": captures["base"].provenance(), "finetuned": captures["finetuned"].provenance()},
    }
    if generated_by is not None:
        data = Prompts(data.prompts, responses, data.ids, data.source, data.extra)
    result = DiffResult(table, manifest, captures["base"].features, captures["finetuned"].features, data)
    if out is not None:
        result.out_dir = write_diff(result, out)
    return result


def write_diff(result: DiffResult, out: str | Path) -> Path:
    """Write ``diff.csv`` and ``manifest.json`` (atomically) into ``out``."""
    out = output_dir(out, "personas.diff")
    result.manifest["files"] = {DIFF_FILE: write_csv(out / DIFF_FILE, result.table)}
    if result.manifest["prompts"].get("responses_generated_by"):
        import pandas as pd

        frame = pd.DataFrame({"id": result.prompts.ids, "prompt": result.prompts.prompts,
                              "response": result.prompts.responses})
        atomic_write_text(out / RESPONSES_FILE, frame.to_json(orient="records", lines=True, force_ascii=False))
        result.manifest["files"][RESPONSES_FILE] = {"note": "generated answers that were teacher-forced"}
    write_json(out / MANIFEST_FILE, result.manifest)
    return out
