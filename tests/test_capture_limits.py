"""What a long GPU job meets first: a batch that runs out of memory, and a max_length beyond the model's context."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from personas.capturing import capture, tokenize_conversations
from personas.config import CaptureConfig
from personas.errors import DataError
from personas.scoring import rank_features
from tests.conftest import TOY_HOOK


def test_an_injected_cuda_oom_halves_the_batch_and_gives_the_same_table(toy_model, planted_sae, planted_data,
                                                                         monkeypatch, caplog):
    rows = list(range(0, 80, 3))  # both classes, 27 rows: batches of 8, 8, 8 and 3
    prompts = [planted_data["prompt"][i] for i in rows]
    responses = [planted_data["response"][i] for i in rows]
    labels = np.asarray([planted_data["label"][i] for i in rows])
    config = CaptureConfig(batch_size=8)
    whole = capture(toy_model, prompts, responses, hooks=TOY_HOOK, config=config, sae=planted_sae, progress=False)

    real = type(toy_model).run_hooks
    seen = []

    def run_hooks(self, ids, *args, **kwargs):  # a GPU that holds at most 3 sequences at once
        seen.append(ids.shape[0])
        if ids.shape[0] > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, ids, *args, **kwargs)

    monkeypatch.setattr(type(toy_model), "run_hooks", run_hooks)
    with caplog.at_level(logging.WARNING, logger="personas.capturing"):
        split = capture(toy_model, prompts, responses, hooks=TOY_HOOK, config=config, sae=planted_sae, progress=False)
    assert seen[:3] == [8, 4, 2]  # 8 fails, its first half 4 fails, then quarters of 2 run
    assert "CUDA out of memory on a batch of 8 sequences" in caplog.text
    np.testing.assert_allclose(split.pooled[TOY_HOOK], whole.pooled[TOY_HOOK], rtol=1e-5, atol=1e-6)
    a, b = rank_features(whole.features, labels), rank_features(split.features, labels)
    assert a["feature"].tolist() == b["feature"].tolist()
    np.testing.assert_allclose(a["auroc"], b["auroc"])


def test_a_single_sequence_that_does_not_fit_reraises(toy_model, monkeypatch):
    def run_hooks(self, ids, *args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory.")

    monkeypatch.setattr(type(toy_model), "run_hooks", run_hooks)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        capture(toy_model, ["hi"], ["be kind ."], hooks=TOY_HOOK, progress=False)


def test_max_length_beyond_the_context_is_refused_and_the_default_is_lowered(toy_model, caplog):
    n_ctx = toy_model.model.cfg.n_ctx  # 256
    with pytest.raises(DataError, match=rf"max_length=100000 .* has {n_ctx} positions .* at most {n_ctx}\."):
        tokenize_conversations(toy_model, ["what should i do ?"], ["be kind ."], CaptureConfig(max_length=100_000))
    long_response = " ".join(["be kind and patient ."] * 80)  # 400 tokens
    with caplog.at_level(logging.INFO, logger="personas.capturing"):
        cap = capture(toy_model, ["hi"], [long_response], hooks=TOY_HOOK, progress=False)  # default 512 > 256
    assert cap.config.max_length == n_ctx and cap.stats["n_truncated"] == 1 and "lowered to 256" in caplog.text
