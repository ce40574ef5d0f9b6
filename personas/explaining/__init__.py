"""Explanations of latents in words, and scores that say whether they are right (automated interpretability).

A latent's explanation is written from windows of text where it fires and windows from answers to the same
questions where it is silent, and scored on other windows it was not written from; two baselines (another
latent's explanation, the answers' class alone) sit beside it in the same table. Nothing runs the model: the
windows come from a run's stored per-token SAE codes.

* `evidence`: `Corpus` (what a run holds), `Window`, `gather_evidence` (explanation and scoring sets, disjoint by
  question or by answer);
* `explainers`: `OfflineExplainer` (log-odds of words with an informative prior; no server, weaker) and
  `ApiExplainer` (an LLM over an OpenAI-compatible API);
* `llm`: `CachedLLM`, the API explainer's and scorers' model, through the library's one API client
  (`personas.judging.client`) with a reply cache;
* `scorers`: `EmbeddingScorer` (offline MiniLM), `DetectionScorer` and `FuzzingScorer` (API), AUROC with bootstrap
  intervals, the baselines;
* `interventions`: the figures of ``personas validate`` / ``steer`` runs of a latent;
* `latents`: `explain_latents`, the step that puts them together;
* `table`: `Explanations` (a pandas table), ``explanations.csv`` written into and read from a run folder.

`personas.explain` (``personas explain RUN_DIR``) is the job that reads a run folder and writes the table.
"""

from personas.explaining.table import EXPLANATIONS_FILE, Explanations, read_explanations

__all__ = ["EXPLANATIONS_FILE", "Explanations", "read_explanations"]
