"""Training SAEs offline: `train_sae` (sae-lens TopK / BatchTopK over activation batches) and the built-in corpus.

* `personas.training.sae`: `train_sae`, `evaluate_sae`, `save_trained_sae`;
* `personas.training.corpus`: the generated training corpus (`build_corpus`), its phrase banks package data.
"""

from personas.training.corpus import build_corpus, describe_corpus
from personas.training.sae import evaluate_sae, save_trained_sae, train_sae

__all__ = ["build_corpus", "describe_corpus", "evaluate_sae", "save_trained_sae", "train_sae"]
