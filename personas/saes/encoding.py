"""Encode activations with an SAE chunk by chunk, keeping only the non-zero codes.

`encode_sparse` encodes activations chunk by chunk and keeps only the non-zero codes (`SparseCodes`); given a
`ReconstructionStats` it also decodes each chunk and accumulates how well the SAE reconstructs them (explained
variance, L0, dead latents), so a capture reports the SAE's fit on the user's own data at the cost of one decode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from personas.errors import PersonasError, SiteMismatchError

if TYPE_CHECKING:
    import scipy.sparse
    import torch


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
