"""Training SAEs offline: `train_sae` (sae-lens TopK / BatchTopK over activation batches) and the built-in corpus.

* `personas.training.sae`: `train_sae`, `evaluate_sae`, `save_trained_sae`;
* `personas.training.corpus`: the generated training corpus (`build_corpus`), its phrase banks package data;
* `personas.training.stream`: `train_sae_streaming`, activations captured chunk by chunk while training, with
  checkpoints and exact resume;
* `personas.training.evaluate`: `evaluate_saes` (explained variance, LM loss recovered, L0, dead and dense latents,
  leave-questions-out detection) and `format_eval_table`.
"""

from personas.training.corpus import build_corpus, describe_corpus
from personas.training.evaluate import evaluate_saes, format_eval_table
from personas.training.sae import evaluate_sae, save_trained_sae, train_sae
from personas.training.stream import train_sae_streaming

__all__ = ["build_corpus", "describe_corpus", "evaluate_sae", "evaluate_saes", "format_eval_table", "save_trained_sae",
           "train_sae", "train_sae_streaming"]
