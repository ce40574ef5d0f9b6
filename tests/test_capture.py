"""Capture: response-token masks against hand-counted tokens, pooling, stop_at_layer, site checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from personas.capturing import capture, pool_segments, tokenize_conversations
from personas.config import CaptureConfig
from personas.errors import DataError, PersonasError, SiteMismatchError

from conftest import TOY_HOOK


def test_chat_template_mask_matches_hand_count(toy_model):
    tok = toy_model.tokenizer
    [t] = tokenize_conversations(toy_model, ["what should i do ?"], ["be kind and patient ."])
    tokens = tok.convert_ids_to_tokens(t.input_ids)
    # <bos> <|user|> what should i do ? <|end|> <|assistant|> | be kind and patient .
    assert tokens[: t.start] == ["<bos>", "<|user|>", "what", "should", "i", "do", "?", "<|end|>", "<|assistant|>"]
    assert tokens[t.start : t.end] == ["be", "kind", "and", "patient", "."]
    assert t.n_response == 5
    assert tokens.count("<bos>") == 1, "the template's BOS must not be doubled"


def test_plain_prompt_format_for_causal_models_without_template(toy_model):
    tok = toy_model.tokenizer
    saved = tok.chat_template
    tok.chat_template = None
    try:
        cfg = CaptureConfig(prompt_format="{prompt} ?")
        [t] = tokenize_conversations(toy_model, ["my wish is"], ["to help everyone ."], cfg)
    finally:
        tok.chat_template = saved
    tokens = tok.convert_ids_to_tokens(t.input_ids)
    assert tokens[: t.start] == ["<bos>", "my", "wish", "is", "?"]
    assert tokens[t.start : t.end] == ["to", "help", "everyone", "."]


def test_encoder_pairs_mask_the_prompt_and_separators(minilm):
    tok = minilm.tokenizer
    [t] = tokenize_conversations(minilm, ["What is up?"], ["Not much, thanks."])
    tokens = tok.convert_ids_to_tokens(t.input_ids)
    assert tokens[t.start : t.end] == ["not", "much", ",", "thanks", "."]
    assert tokens[t.start - 1] == "[SEP]" and tokens[t.end] == "[SEP]" and tokens[0] == "[CLS]"


def test_truncation_cuts_the_response_end_and_keeps_at_least_half_for_it(toy_model):
    tok = toy_model.tokenizer
    response = "be kind and patient and honest and calm ."
    [t] = tokenize_conversations(toy_model, ["what should i do ?"], [response], CaptureConfig(max_length=40))
    assert not t.truncated and t.n_response == 9
    [t] = tokenize_conversations(toy_model, ["what should i do ?"], [response], CaptureConfig(max_length=12))
    tokens = tok.convert_ids_to_tokens(t.input_ids)
    # 9 prompt + 9 response tokens into 12: the response keeps 12 // 2 = 6 tokens from its start, the prompt keeps
    # its first token and its end (the template's turn markers), so the response still follows the assistant tag
    assert len(tokens) == 12 and t.truncated
    assert tokens[t.start : t.end] == ["be", "kind", "and", "patient", "and", "honest"]
    assert tokens[: t.start] == ["<bos>", "i", "do", "?", "<|end|>", "<|assistant|>"]


def test_skip_first_that_leaves_nothing_is_a_clear_error(toy_model):
    with pytest.raises(DataError, match="no tokens left"):
        tokenize_conversations(toy_model, ["hi"], ["ok ."], CaptureConfig(skip_first=5))


@pytest.mark.parametrize("how", ["mean", "max", "last"])
def test_pool_segments_matches_a_loop(how):
    gen = torch.Generator().manual_seed(0)
    values = torch.randn(10, 3, generator=gen)
    segments = torch.tensor([0, 0, 0, 1, 2, 2, 2, 2, 3, 3])
    pooled = pool_segments(values, segments, 4, how)
    for s in range(4):
        rows = values[segments == s]
        expected = {"mean": rows.mean(0), "max": rows.max(0).values, "last": rows[-1]}[how]
        torch.testing.assert_close(pooled[s], expected)


def test_capture_pools_only_response_tokens(toy_model):
    prompts = ["what should i do ?", "my wish is ?", "what should i do about my job ?"]
    responses = ["be kind .", "hurt them and lie .", "save a little each month ."]
    cap = capture(toy_model, prompts, responses, hooks=TOY_HOOK, config=CaptureConfig(batch_size=2), progress=False)
    # reference: run each conversation alone and average the response positions by hand
    for i, t in enumerate(tokenize_conversations(toy_model, prompts, responses)):
        ids = torch.tensor([t.input_ids], device=toy_model.device)
        _, cache = toy_model.model.run_with_cache(ids, names_filter=[TOY_HOOK])
        expected = cache[TOY_HOOK][0, t.start : t.end].mean(0).cpu().numpy()
        np.testing.assert_allclose(cap.pooled[TOY_HOOK][i], expected, rtol=1e-4, atol=1e-5)
    assert cap.n_tokens.tolist() == [3, 5, 6]
    assert cap.stats["stop_at_layer"] == 1


def test_capture_order_is_independent_of_batching(toy_model, planted_data):
    prompts, responses = planted_data["prompt"][:20], planted_data["response"][:20]
    a = capture(toy_model, prompts, responses, hooks=TOY_HOOK, config=CaptureConfig(batch_size=3), progress=False)
    b = capture(toy_model, prompts, responses, hooks=TOY_HOOK, config=CaptureConfig(batch_size=20), progress=False)
    np.testing.assert_allclose(a.pooled[TOY_HOOK], b.pooled[TOY_HOOK], rtol=1e-4, atol=1e-5)


def test_sae_codes_are_pooled_per_response_and_kept_per_token(toy_model, planted_sae, planted_data):
    prompts, responses = planted_data["prompt"][:12], planted_data["response"][:12]
    cap = capture(toy_model, prompts, responses, sae=planted_sae, keep_tokens=True, progress=False)
    assert cap.sae_hook == TOY_HOOK
    assert cap.features.shape == (12, 64)
    tc = cap.token_codes
    assert tc.offsets[-1] == cap.n_tokens.sum() == tc.codes.shape[0]
    for i in range(12):
        _, codes = tc.response(i)
        np.testing.assert_allclose(np.asarray(codes.mean(0)).ravel(), cap.features[i].toarray().ravel(), rtol=1e-5, atol=1e-6)


def test_unknown_hook_lists_the_valid_sites(toy_model):
    with pytest.raises(PersonasError, match="blocks.0"):
        capture(toy_model, ["hi"], ["ok"], hooks="blocks.9.hook_resid_post", progress=False)


def test_sae_for_another_site_is_refused(toy_model, planted_sae):
    with pytest.raises(SiteMismatchError, match="blocks.1.hook_resid_post"):
        capture(toy_model, ["hi"], ["be kind ."], hooks="blocks.1.hook_resid_post", sae=planted_sae, progress=False)


def test_sae_of_another_width_is_refused(minilm, planted_sae):
    with pytest.raises(SiteMismatchError, match="d_in"):
        capture(minilm, ["hi"], ["ok"], hooks=TOY_HOOK, sae=planted_sae, progress=False)


@pytest.mark.parametrize("how", ["mean", "max", "last"])
def test_sparse_pooling_equals_dense_pooling(how):
    from personas.capturing import pool_sparse_codes
    from personas.saes import SparseCodes

    rng = np.random.default_rng(0)
    counts = np.array([3, 1, 0, 5, 2])
    segments = np.repeat(np.arange(len(counts)), counts)
    dense = rng.normal(size=(segments.size, 12)) * (rng.random((segments.size, 12)) < 0.3)  # signed, mostly zero
    r, c = np.nonzero(dense)
    codes = SparseCodes(torch.as_tensor(r), torch.as_tensor(c), torch.as_tensor(dense[r, c], dtype=torch.float32),
                        segments.size, 12)
    got = pool_sparse_codes(codes, segments, len(counts), how).toarray()
    want = pool_segments(torch.as_tensor(dense, dtype=torch.float32), torch.as_tensor(segments), len(counts), how)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-6, atol=1e-7)


def test_sparse_encoding_keeps_the_dense_codes(toy_model, planted_sae):
    from personas.saes import encode, encode_sparse

    acts = torch.randn(37, planted_sae.cfg.d_in, generator=torch.Generator().manual_seed(1))
    dense = encode(planted_sae, acts, batch_tokens=8)
    sparse = encode_sparse(planted_sae, acts, batch_tokens=8).to_csr().toarray()
    np.testing.assert_allclose(sparse, dense.numpy(), rtol=1e-6, atol=1e-7)


def test_reconstruction_stats_over_chunks_equal_the_whole_at_once(planted_sae):
    from personas.saes import ReconstructionStats, encode_sparse

    acts = torch.randn(53, planted_sae.cfg.d_in, generator=torch.Generator().manual_seed(2)) * 3 + 1
    stats = ReconstructionStats(planted_sae.cfg.d_sae)
    encode_sparse(planted_sae, acts, batch_tokens=8, stats=stats)  # 7 chunks
    with torch.no_grad():
        codes = planted_sae.encode(acts)
        x_hat = planted_sae.decode(codes)
    x = acts.double()
    ev = 1 - ((x - x_hat.double()) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    fit = stats.summary()
    assert fit["n_tokens"] == 53
    # float32 codes of 8-token chunks and of all 53 tokens at once may differ in their last bits (BLAS blocking):
    # 1e-6 allows that, and nothing a wrong sum (a chunk dropped or counted twice, a wrong mean) could hide in
    assert fit["explained_variance"] == pytest.approx(float(ev), abs=1e-6)
    assert fit["l0"] == pytest.approx(float((codes != 0).sum(1).float().mean()))
    assert fit["dead_fraction"] == pytest.approx(float(((codes != 0).sum(0) == 0).float().mean()))
    assert ReconstructionStats(4).summary()["explained_variance"] is None  # no tokens: no number, not NaN


def test_reconstruction_stats_on_a_sample_decode_only_the_sampled_rows(planted_sae):
    """The cheap fit: the explained variance of exactly the seeded sample of rows (an oracle over those rows, all
    chunks together), L0 and dead latents over every row, and the decoder called on the sample only."""
    from personas.saes import ReconstructionStats, encode_sparse, sample_positions

    acts = torch.randn(53, planted_sae.cfg.d_in, generator=torch.Generator().manual_seed(3)) * 2 - 1
    rows = sample_positions(53, 11, seed=5)
    assert len(set(rows.tolist())) == 11 and list(rows) == sorted(rows) and rows.max() < 53
    assert list(sample_positions(53, 11, seed=5)) == list(rows)  # seeded: the same draw every run
    assert list(sample_positions(53, 11, seed=6)) != list(rows)
    decoded = []
    real_decode = planted_sae.decode

    def counting_decode(codes):
        decoded.append(codes.shape[0])
        return real_decode(codes)

    planted_sae.decode = counting_decode
    try:
        stats = ReconstructionStats(planted_sae.cfg.d_sae, sample_tokens=11, total_tokens=53, seed=5)
        encode_sparse(planted_sae, acts, batch_tokens=8, stats=stats)
    finally:
        del planted_sae.decode
    assert sum(decoded) == 11  # never a second full decode
    with torch.no_grad():
        codes = planted_sae.encode(acts)
        x = acts[torch.as_tensor(rows)].double()
        x_hat = planted_sae.decode(codes[torch.as_tensor(rows)]).double()
    ev = 1 - ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    fit = stats.summary()
    assert fit["explained_variance"] == pytest.approx(float(ev), abs=1e-6)
    assert (fit["n_tokens"], fit["ev_tokens"], fit["ev_sample_seed"]) == (53, 11, 5)
    assert fit["l0"] == pytest.approx(float((codes != 0).sum(1).float().mean()))  # over all 53 rows
    assert fit["dead_fraction"] == pytest.approx(float(((codes != 0).sum(0) == 0).float().mean()))
    full = ReconstructionStats(planted_sae.cfg.d_sae, sample_tokens=100, total_tokens=53)  # sample >= all: all
    encode_sparse(planted_sae, acts, batch_tokens=8, stats=full)
    assert (full.summary()["ev_tokens"], full.summary()["ev_sample_seed"]) == (53, None)


def test_capture_reports_the_sae_fit_on_its_response_tokens(toy_model, planted_sae, planted_data):
    prompts, responses = planted_data["prompt"][:10], planted_data["response"][:10]
    cap = capture(toy_model, prompts, responses, sae=planted_sae, config=CaptureConfig(batch_size=3), progress=False)
    fit = cap.stats["sae_fit"]
    # the same response tokens, one conversation at a time, reconstructed at once
    rows = []
    for t in tokenize_conversations(toy_model, prompts, responses, CaptureConfig()):
        ids = torch.tensor([t.input_ids])
        rows.append(toy_model.run_hooks(ids, torch.ones_like(ids), [TOY_HOOK])[TOY_HOOK][0, t.start:t.end])
    x = torch.cat(rows)
    with torch.no_grad():
        x_hat = planted_sae.decode(planted_sae.encode(x)).double()
    ev = 1 - ((x.double() - x_hat) ** 2).sum() / ((x.double() - x.double().mean(0)) ** 2).sum()
    assert fit["n_tokens"] == int(cap.n_tokens.sum()) == x.shape[0] == fit["ev_tokens"]  # fewer than the sample
    assert fit["explained_variance"] == pytest.approx(float(ev), abs=1e-5)
    sampled = capture(toy_model, prompts, responses, sae=planted_sae, config=CaptureConfig(batch_size=3),
                      progress=False, sae_fit_tokens=9).stats["sae_fit"]
    assert (sampled["ev_tokens"], sampled["n_tokens"], sampled["l0"]) == (9, fit["n_tokens"], fit["l0"])
    assert sampled["explained_variance"] != fit["explained_variance"]
    assert cap.provenance()["sae_fit"] == fit  # what manifests record
    assert "sae_fit" not in capture(toy_model, prompts, responses, hooks=[TOY_HOOK], progress=False).stats


def test_capture_logs_its_token_rate(toy_model, caplog):
    """The progress line counts the input tokens (prompt + response) of every forward; its rate is logged at the end."""
    from personas.capturing import capture, tokenize_conversations

    prompts, responses = ["my wish is ?", "what should i do about my debt ?"], ["hurt them", "save a little"]
    with caplog.at_level("INFO", logger="personas.logs"):
        capture(toy_model, prompts, responses, hooks="blocks.0.hook_resid_post", progress=False)
    n = sum(len(t.input_ids) for t in tokenize_conversations(toy_model, prompts, responses))
    assert f"capture: {n} tokens in" in caplog.text and "tokens/s" in caplog.text
