"""A detector read token by token: the persona score of each answer token and of the answer, at the detector's site.

A saved detector (`personas.detect`) scores a response from its activations at one site pooled over the response
tokens: SAE codes for a `PersonaDetector` fit on an SAE (its k latents), raw activation dimensions for one fit without
an SAE, the whole activation for the dense `DiffMeansProbe`. `TokenScorer` applies that same function

* to each answer token's activation alone: the **token score** (what the detector says of this token);
* to the answer's activations pooled as the detector's capture pooled them (``mean``, ``max`` or ``last``, after
  ``skip_first`` tokens): the **answer score**, which is exactly the detector's score of the answer as
  `PersonaDetector.score_responses` would compute it;

and `Verdict` holds both, the maximum token score beside them, the threshold and the flag (answer score at or above
the threshold), and, for SAE detectors, the latents that pushed the score up most (coefficient times the
standardised pooled code). Features are kept per token as the detector's columns only (k numbers for an SAE
detector), so a generation can be scored as it is decoded and pooled at its end. The scores go through the
detector's own ``decision_function``: a change of the detector changes the monitor with it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from personas.errors import PersonasError
from personas.saes import check_sae_identity

if TYPE_CHECKING:
    import torch

__all__ = ["TokenScorer", "Verdict"]

#: Latents listed in a verdict's ``top_latents``.
TOP_LATENTS = 5


@dataclass
class Verdict:
    """What the monitor says of one answer.

    ``score`` is the detector's score of the answer (its pooling over the answer tokens; None when the answer has no
    token to score), ``flagged`` whether it reaches ``threshold``, ``max_token_score`` the highest token score,
    ``token_scores`` every answer token's score (None for tokens the detector's ``skip_first`` leaves out),
    ``top_latents`` the SAE latents that raised the score most (``latent``, pooled ``activation``, ``contribution``
    to the score), ``n_tokens`` the answer tokens scored.
    """

    score: float | None
    flagged: bool
    threshold: float
    max_token_score: float | None
    n_tokens: int
    token_scores: list[float | None] = field(default_factory=list)
    top_latents: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self, token_scores: bool = True) -> dict[str, Any]:
        """JSON-able fields, floats rounded to 6 digits; without ``token_scores`` when asked."""
        out = asdict(self)
        for key in ("score", "threshold", "max_token_score"):
            out[key] = _round(out[key])
        out["token_scores"] = [_round(s) for s in self.token_scores] if token_scores else None
        out["top_latents"] = [{k: (int(v) if k == "latent" else _round(v)) for k, v in row.items()}
                              for row in self.top_latents]
        if not token_scores:
            del out["token_scores"]
        return out


def _round(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


class TokenScorer:
    """The detector's score of single answer tokens and of whole answers, from activations at its site.

    ``detector`` is a fitted `PersonaDetector` or `DiffMeansProbe` whose provenance names its site (every detector
    `personas detect` saves does); ``sae`` is the SAE it was fit on (needed when it was fit on SAE codes; checked
    against the recorded SAE's identity). ``hook``, ``pool`` and ``skip_first`` come from the provenance.
    """

    def __init__(self, detector: Any, sae: Any = None) -> None:
        prov = getattr(detector, "provenance", None) or {}
        capture = prov.get("capture") or {}
        self.detector = detector
        self.kind = detector.kind
        self.uses_sae = self.kind == "detector" and bool(prov.get("sae"))
        self.hook = prov.get("hook") or capture.get("hook") or (sae.cfg.metadata.hook_name if sae is not None else None)
        if not self.hook:
            raise PersonasError("the detector's provenance names no site (hook); a monitor reads the site the "
                                "detector was fit at: save it with `personas detect --out` (or set .provenance).")
        self.pool = capture.get("pool", "mean")
        self.skip_first = int(capture.get("skip_first", 0) or 0)
        if self.uses_sae:
            if sae is None:
                raise PersonasError("this detector was fit on SAE codes; pass the SAE it was fit on (sae=).")
            check_sae_identity(prov["sae"].get("identity"), sae, "this monitor's detector")
            if sae.cfg.metadata.hook_name and sae.cfg.metadata.hook_name != self.hook:
                raise PersonasError(f"the SAE reads {sae.cfg.metadata.hook_name!r} but the detector was fit at "
                                    f"{self.hook!r}; pass the SAE the detector was fit on.")
        self.sae = sae if self.uses_sae else None
        self.n_in = int(detector.n_features_in_)
        self.columns = (np.asarray(detector.features_, dtype=np.int64) if self.kind == "detector"
                        else np.arange(self.n_in, dtype=np.int64))

    @property
    def width(self) -> int:
        """Numbers kept per token: the detector's columns (k for an SAE detector, d for the dense probe)."""
        return int(self.columns.size)

    def features(self, activations: torch.Tensor) -> np.ndarray:
        """[n_tokens, width] float64: the detector's columns of each token's SAE codes (or activations)."""
        import torch

        x = activations.detach().reshape(-1, activations.shape[-1])
        if self.uses_sae:
            param = next(iter(self.sae.parameters()))
            with torch.no_grad():
                codes = self.sae.encode(x.to(device=param.device, dtype=param.dtype))
            cols = torch.as_tensor(self.columns, device=codes.device)
            return codes.index_select(1, cols).double().cpu().numpy()
        if x.shape[-1] != self.n_in and self.kind != "detector":
            raise PersonasError(f"the activation at {self.hook!r} has {x.shape[-1]} dimensions; the detector was fit "
                                f"on {self.n_in}. Serve the model the detector was fit on (or one of its width).")
        cols = torch.as_tensor(self.columns, device=x.device)
        return x.index_select(1, cols).double().cpu().numpy()

    def _decision(self, feats: np.ndarray) -> np.ndarray:
        """The detector's ``decision_function`` on rows holding only its columns."""
        import scipy.sparse as sp

        if self.kind != "detector":
            return self.detector.decision_function(feats)
        rows = np.repeat(np.arange(feats.shape[0]), self.width)
        cols = np.tile(self.columns, feats.shape[0])
        matrix = sp.csr_matrix((feats.ravel(), (rows, cols)), shape=(feats.shape[0], self.n_in))
        return self.detector.decision_function(matrix)

    def pooled(self, feats: np.ndarray) -> np.ndarray:
        """[width]: the scored tokens' features pooled as the detector's capture pooled them."""
        scored = feats[self.skip_first:]
        if self.pool == "mean":
            return scored.mean(axis=0)
        if self.pool == "max":
            return scored.max(axis=0)
        if self.pool == "last":
            return scored[-1]
        raise PersonasError(f"the detector was fit with pool={self.pool!r}; expected 'mean', 'max' or 'last'.")

    def verdict(self, feats: np.ndarray, threshold: float) -> Verdict:
        """The verdict on one answer from its per-token features ([n_tokens, width], answer order)."""
        feats = np.asarray(feats, dtype=np.float64).reshape(-1, self.width)
        n = feats.shape[0]
        if n - self.skip_first < 1:
            return Verdict(score=None, flagged=False, threshold=float(threshold), max_token_score=None, n_tokens=0,
                           token_scores=[None] * n)
        tokens = self._decision(feats)
        pooled = self.pooled(feats)
        score = float(self._decision(pooled[None, :])[0])
        token_scores: list[float | None] = [None] * self.skip_first + [float(s) for s in tokens[self.skip_first:]]
        return Verdict(score=score, flagged=bool(score >= threshold), threshold=float(threshold),
                       max_token_score=float(np.max(tokens[self.skip_first:])), n_tokens=n - self.skip_first,
                       token_scores=token_scores, top_latents=self.top_latents(pooled))

    def top_latents(self, pooled: np.ndarray, n: int = TOP_LATENTS) -> list[dict[str, float]]:
        """The SAE latents whose standardised pooled codes raise the score most (an empty list without an SAE)."""
        if not self.uses_sae:
            return []
        det = self.detector
        contribution = np.asarray(det.coef_) * (pooled - np.asarray(det.mean_)) / np.asarray(det.scale_)
        order = np.argsort(-contribution, kind="stable")[:n]
        return [{"latent": int(self.columns[i]), "activation": float(pooled[i]), "contribution": float(contribution[i])}
                for i in order]
