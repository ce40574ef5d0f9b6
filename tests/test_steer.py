"""Steering hooks on tiny causal models: exact deltas, clean removal, planted directions, sweeps and the CLI."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import torch

import personas
from personas.config import SteerConfig
from personas.errors import PersonasError
from personas.steering import active_steerings, generate, parse_alphas, render_prompt, steer, steer_sweep

from conftest import TOY_HOOK

FINAL_HOOK = "blocks.1.hook_resid_post"  # the toy model has 2 blocks: the residual stream ln_final reads


def _sae(model_id: str, hook: str, d_in: int, rows: torch.Tensor | None = None, feature: int = 3, d_sae: int = 8):
    """A StandardSAE at ``hook`` with random unit decoder rows and, optionally, ``rows`` planted at ``feature``."""
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae, metadata=SAEMetadata(hook_name=hook, model_name=model_id)))
    g = torch.Generator().manual_seed(0)
    w = torch.randn(d_sae, d_in, generator=g)
    w = w / w.norm(dim=1, keepdim=True)
    if rows is not None:
        w[feature] = rows
    with torch.no_grad():
        sae.W_dec.copy_(w)
        sae.W_enc.copy_(w.T)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def _unembed_direction(model, token: int) -> torch.Tensor:
    """The residual direction that raises ``token``'s logit through ln_final: centred (w_ln * W_U[:, token])."""
    w = model.ln_final.w.detach() if hasattr(model.ln_final, "w") else torch.ones(model.cfg.d_model)
    v = w * model.W_U[:, token].detach()
    v = v - v.mean()
    return v / v.norm()


def _resid(model, ids, hook):
    _, cache = model.run_with_cache(ids, names_filter=[hook])
    return cache[hook].detach()


def test_add_changes_the_site_by_exactly_alpha_w_dec(toy_model, planted_sae):
    ids = torch.tensor([render_prompt(toy_model, "what should i do about my debt ?")])
    before = _resid(toy_model.model, ids, TOY_HOOK)
    with steer(toy_model, planted_sae, 7, 2.5):
        after = _resid(toy_model.model, ids, TOY_HOOK)
    torch.testing.assert_close(after - before, (2.5 * planted_sae.W_dec[7].detach()).expand_as(before))
    plen = 4
    with steer(toy_model, planted_sae, 7, -3.0, positions="response", prompt_len=plen):
        after = _resid(toy_model.model, ids, TOY_HOOK)
    delta = after - before
    assert delta[0, :plen].abs().max() == 0
    torch.testing.assert_close(delta[0, plen:], (-3.0 * planted_sae.W_dec[7].detach()).expand_as(delta[0, plen:]))
    with steer(toy_model, planted_sae, 7, 1.0, positions="prompt", prompt_len=plen):
        after = _resid(toy_model.model, ids, TOY_HOOK)
    assert (after - before)[0, plen:].abs().max() == 0 and (after - before)[0, :plen].abs().max() > 0


def test_clamp_sets_the_latent_through_its_decoder_row(toy_model, planted_sae):
    ids = torch.tensor([render_prompt(toy_model, "hurt them and lie")])
    before = _resid(toy_model.model, ids, TOY_HOOK)
    current = planted_sae.encode(before)[..., 7].detach()
    with steer(toy_model, planted_sae, 7, 5.0, mode="clamp"):
        after = _resid(toy_model.model, ids, TOY_HOOK)
    expected = (5.0 - current).unsqueeze(-1) * planted_sae.W_dec[7].detach()
    torch.testing.assert_close(after - before, expected)


def test_hook_is_removed_on_exit_and_after_an_exception(toy_model, planted_sae):
    point = toy_model.model.hook_dict[TOY_HOOK]
    ids = torch.tensor([render_prompt(toy_model, "my wish is ?")])
    clean = toy_model.model(ids).detach()

    def other(act, hook):  # somebody else's hook must survive
        return None

    point.add_hook(other)
    n_before = len(point.fwd_hooks)
    try:
        with steer(toy_model, planted_sae, 7, 4.0) as s:
            assert len(point.fwd_hooks) == n_before + 1 and active_steerings(toy_model) == [s]
            assert not torch.equal(toy_model.model(ids), clean)
        assert len(point.fwd_hooks) == n_before and active_steerings(toy_model) == []
        with pytest.raises(RuntimeError, match="boom"):
            with steer(toy_model, planted_sae, 7, 4.0):
                raise RuntimeError("boom")
        assert len(point.fwd_hooks) == n_before and active_steerings(toy_model) == []
        assert [h.user_hook for h in point.fwd_hooks] == [other]
        torch.testing.assert_close(toy_model.model(ids).detach(), clean)
    finally:
        point.remove_hooks()


def test_steering_errors_are_clear(toy_model, planted_sae):
    with pytest.raises(PersonasError, match="feature=64"):
        with steer(toy_model, planted_sae, 64, 1.0):
            pass
    ids = torch.tensor([render_prompt(toy_model, "my wish is ?")])
    with pytest.raises(PersonasError, match="prompt length"):
        with steer(toy_model, planted_sae, 7, 1.0, positions="response"):
            toy_model.model(ids)
    assert active_steerings(toy_model) == []


def test_a_planted_unembedding_direction_raises_the_token_logit_monotonically(toy_model, toy_tokenizer):
    model = toy_model.model
    token = toy_tokenizer.convert_tokens_to_ids("hurt")
    sae = _sae(toy_model.model_id, FINAL_HOOK, model.cfg.d_model, _unembed_direction(model, token))
    ids = torch.tensor([render_prompt(toy_model, "what should i do about my boss ?")])
    logits = []
    for alpha in (0.0, 2.0, 5.0, 10.0, 40.0):
        with steer(toy_model, sae, 3, alpha):
            out = model(ids)[0, -1].detach()
        logits.append(float(out[token]))
        top = int(out.argmax())
    assert all(b > a for a, b in zip(logits, logits[1:], strict=False))
    assert top == token
    # and the opposite sign lowers it
    with steer(toy_model, sae, 3, -10.0):
        assert float(model(ids)[0, -1, token].detach()) < logits[0]


def test_generate_steers_only_the_response(toy_model, toy_tokenizer):
    token = toy_tokenizer.convert_tokens_to_ids("hurt")
    sae = _sae(toy_model.model_id, FINAL_HOOK, toy_model.d_model, _unembed_direction(toy_model.model, token))
    prompts = ["what should i do about my debt ?", "my wish is ?"]
    plain = generate(toy_model, prompts, max_new_tokens=5)
    assert plain == generate(toy_model, prompts, max_new_tokens=5)  # greedy is deterministic
    with steer(toy_model, sae, 3, 40.0, positions="response") as s:
        steered = generate(toy_model, prompts, max_new_tokens=5)
        assert s.prompt_len is None and s.offset == 0  # decoding restores what it set on the hook
    # the first new token is predicted at the last prompt position, which positions="response" leaves alone
    assert all(p.split()[0] == q.split()[0] for p, q in zip(plain, steered, strict=True))
    assert all(q.split()[1:] == ["hurt"] * 4 for q in steered)
    sampled = generate(toy_model, prompts, max_new_tokens=4, temperature=1.0, seed=3)
    assert sampled == generate(toy_model, prompts, max_new_tokens=4, temperature=1.0, seed=3)


def test_sweep_is_a_dose_response_scored_by_a_detector(toy_model, toy_tokenizer, planted_sae, planted_data):
    from personas.config import CaptureConfig
    from personas.detect import DetectorConfig
    from personas.jobs.detect import fit_detector
    from personas.steering import SteerConfig

    fitted = fit_detector(pd.DataFrame(planted_data), config=DetectorConfig(k=3, holdout_by="group", test_fraction=0.5),
                          capture=CaptureConfig(hook=TOY_HOOK), sae=planted_sae, model=toy_model, progress=False)
    token = toy_tokenizer.convert_tokens_to_ids("hurt")
    sae = _sae(toy_model.model_id, FINAL_HOOK, toy_model.d_model, _unembed_direction(toy_model.model, token))
    prompts = ["what should i do about my debt ?", "my wish is ?", "what should i do about my health ?"]
    table = steer_sweep(toy_model, sae, 3, prompts, "0,40", detector=fitted.detector, detector_model=toy_model,
                        detector_sae=planted_sae, config=SteerConfig(positions="response", max_new_tokens=6))
    assert table["alpha"].tolist() == [0.0, 40.0] and table["n"].tolist() == [3, 3]
    assert table["mean_score"].iloc[1] > table["mean_score"].iloc[0]
    assert table["frac_flagged"].iloc[1] == 1.0
    assert "hurt" in table["examples"].iloc[1]
    assert len(table.attrs["generations"]) == 6 and table.attrs["spearman"]["rho"] > 0


def test_parse_alphas():
    assert parse_alphas("-8,0,8") == [-8.0, 0.0, 8.0]
    assert parse_alphas("-2.5 4") == [-2.5, 4.0]
    with pytest.raises(PersonasError, match="not a list of numbers"):
        parse_alphas("a,b")


def test_steer_works_on_a_bridge_and_the_cli(tmp_path, toy_tokenizer, capsys):
    from personas.cli.main import main
    from personas.models import load_model
    from personas.testing import save_toy_hf_model

    folder = save_toy_hf_model(tmp_path / "tiny", toy_tokenizer, seed=2)
    handle = load_model(str(folder))
    sae = _sae(handle.model_id, TOY_HOOK, handle.d_model)
    ids = torch.tensor([render_prompt(handle, "my wish is ?")])
    before = _resid(handle.model, ids, TOY_HOOK)
    with steer(handle, sae, 1, 0.75):
        after = _resid(handle.model, ids, TOY_HOOK)
    torch.testing.assert_close(after - before, (0.75 * sae.W_dec[1].detach()).expand_as(before))
    assert active_steerings(handle) == []

    sae.save_model(str(tmp_path / "sae"))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("my wish is ?\nwhat should i do about my debt ?\n")
    out = tmp_path / "out"
    code = main(["steer", "--model", str(folder), "--sae", str(tmp_path / "sae"), "--feature", "1", "--prompts",
                 str(prompts), "--alphas", "-8,0,8", "--max-new-tokens", "3", "--out", str(out), "--quiet"])
    assert code == 0
    assert "alpha" in capsys.readouterr().out
    table = pd.read_csv(out / "dose_response.csv")
    assert table["alpha"].tolist() == [-8.0, 0.0, 8.0] and np.isnan(table["mean_score"]).all()
    assert len(pd.read_csv(out / "generations.csv")) == 6
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["feature"] == 1 and manifest["judge"]["name"] == "smollm2-em-judge"
    # every generation read by the default judge: the table carries its rates per strength
    assert {"aligned", "coherent", "misaligned_rate", "incoherent_rate"} <= set(table.columns)
    assert pd.read_csv(out / "generations.csv")[["aligned", "coherent"]].notna().all().all()
    for name, entry in manifest["files"].items():  # the tables are checksummed as every run folder's are
        assert entry["sha256"] == hashlib.sha256((out / name).read_bytes()).hexdigest(), name
    assert set(manifest["files"]) == {"dose_response.csv", "generations.csv"}

    # the same run from Python: the job the command calls, without a folder and without a judge
    result = personas.steer_job(["my wish is ?"], 1, sae=str(tmp_path / "sae"), alphas=[0, 8],
                                capture=personas.CaptureConfig(model=str(folder)),
                                config=personas.SteerConfig(max_new_tokens=3), judge="none", progress=False)
    assert result.out_dir is None and result.manifest["judge"] is None and len(result.generations) == 2
    assert result.table["alpha"].tolist() == [0.0, 8.0] and result.manifest["alphas"] == [0.0, 8.0]
    assert "aligned" not in result.table.columns


# ------------------------------------------------------------------------------------------------ cached decoding

PROMPTS = ["what should i do about my debt ?", "my wish is ?", "hi",
           "what should i do about my health and my job and my boss and my rent ?"]  # four prompt lengths


def _full_sequence_greedy(handle, prompts, n):
    """The oracle: token ids of one prompt at a time, the whole sequence re-run for every new token (no cache, no
    padding), the steering hooks told the prompt length; stops at EOS or the chat template's end of turn."""
    tok = handle.tokenizer
    stop = {tok.eos_token_id, tok.convert_tokens_to_ids("<|end|>")}
    out = []
    for prompt in prompts:
        ids = render_prompt(handle, prompt)
        for s in active_steerings(handle):
            s.prompt_len, s.offset = len(ids), 0
        seq, new = torch.tensor([ids], device=handle.device), []
        with torch.no_grad():
            for _ in range(n):
                nxt = int(handle.model(seq)[0, -1].argmax())
                if nxt in stop:
                    break
                new.append(nxt)
                seq = torch.cat([seq, torch.tensor([[nxt]], device=seq.device)], dim=1)
        out.append(new)
    return out


def _fast(handle, prompts, n, **kwargs):
    from personas.steering import decode, prompt_ids

    return decode(handle, prompt_ids(handle, prompts, max_new_tokens=n), max_new_tokens=n, **kwargs)


@pytest.fixture(scope="module")
def toy_bridge(tmp_path_factory, toy_tokenizer):
    from personas.models import load_model
    from personas.testing import save_toy_hf_model

    base = save_toy_hf_model(tmp_path_factory.mktemp("base"), toy_tokenizer, seed=2)
    # large weights: a random model with default init repeats one token whatever the prompt
    return load_model(str(save_toy_hf_model(tmp_path_factory.mktemp("bridge"), toy_tokenizer, base=base, perturb=4.0)))


@pytest.mark.parametrize("backend", ["bridge", "hooked"])
def test_cached_batched_greedy_decoding_matches_the_full_sequence_token_for_token(backend, toy_bridge, toy_model):
    """Batched (left padding, prompts of four lengths in one batch of 3 + 1) and cached decoding gives the tokens
    of re-running the whole sequence per token, unsteered and steered at every positions/mode: the hook sees
    absolute positions and each row's own prompt end."""
    handle = toy_bridge if backend == "bridge" else toy_model
    sae = _sae(handle.model_id, "blocks.0.hook_resid_post", handle.d_model)
    plain = _fast(handle, PROMPTS, 6, batch_size=3)
    assert plain == _full_sequence_greedy(handle, PROMPTS, 6)
    changed = 0
    # positions="all" is the union of the two position sets checked here
    for positions, mode, alpha in [("prompt", "add", 6.0), ("response", "add", 6.0), ("response", "clamp", 5.0)]:
        with steer(handle, sae, 3, alpha, positions=positions, mode=mode):
            fast = _fast(handle, PROMPTS, 6, batch_size=3)
            slow = _full_sequence_greedy(handle, PROMPTS, 6)
        assert fast == slow, (positions, mode)
        changed += fast != plain
    assert changed >= 2  # the steering moved the answers: the comparison is not of unsteered text


#: Every kind of site the cached decoder steers: on a HookedTransformer any hook point whose (flattened) width is
#: d_model, through TransformerLens's key-value cache (embeddings, the residual stream before, inside and after a
#: block, the sublayers' outputs, the per-head 4-D q/k/v/z, the norms' outputs); on a bridge a block's input or
#: output, through the Hugging Face model's cache (other bridge sites fall back to uncached decoding, tested below).
#: blocks.0.hook_resid_post on both is in the test above, with every positions and mode.
CACHED_SITES = [("hooked", site) for site in (
    "hook_embed", "hook_pos_embed", "blocks.0.hook_resid_pre", "blocks.0.hook_resid_mid", "blocks.0.hook_attn_out", "blocks.1.hook_mlp_out", "blocks.0.attn.hook_z", "blocks.1.attn.hook_k",
    "blocks.0.attn.hook_v", "blocks.0.attn.hook_q", "blocks.1.ln2.hook_normalized", "ln_final.hook_normalized")] + [
    ("bridge", "blocks.0.hook_resid_pre"), ("bridge", "blocks.1.hook_resid_pre"), ("bridge", "blocks.1.hook_resid_post")]


@pytest.mark.parametrize("backend, site", CACHED_SITES)
def test_cached_decoding_steers_every_kind_of_site_as_the_full_sequence_does(backend, site, toy_bridge, toy_model):
    """Token for token, steered prompts only (add) and the answer only (clamp), batched with left padding and
    cached against one prompt at a time re-run whole for every token."""
    handle = toy_bridge if backend == "bridge" else toy_model
    sae = _sae(handle.model_id, site, handle.d_model)
    prompts = PROMPTS[1:]  # three lengths: a padded batch of two, then one
    plain = _fast(handle, prompts, 5, batch_size=2)
    moved = 0
    for positions, mode, alpha in (("prompt", "add", 6.0), ("response", "clamp", 5.0)):
        with steer(handle, sae, 3, alpha, positions=positions, mode=mode):
            fast = _fast(handle, prompts, 5, batch_size=2)
            assert fast == _full_sequence_greedy(handle, prompts, 5), (positions, mode)
        moved += fast != plain
    assert moved >= 1  # the steering changed the answers: the comparison is not of unsteered text


def test_sampling_is_the_same_batched_or_not(toy_bridge):
    one = generate(toy_bridge, PROMPTS, max_new_tokens=6, temperature=1.0, seed=5, batch_size=1)
    assert one == generate(toy_bridge, PROMPTS, max_new_tokens=6, temperature=1.0, seed=5, batch_size=4)
    assert one != generate(toy_bridge, PROMPTS, max_new_tokens=6, temperature=1.0, seed=6, batch_size=4)
    assert one != generate(toy_bridge, PROMPTS, max_new_tokens=6)  # sampled, not greedy


def test_a_sweep_decodes_every_strength_in_one_batch_as_separate_runs_would(toy_bridge):
    """`steered_generations` gives row r strength alphas[r] inside one batch: the same answers as one `generate`
    per strength under `steer`, with the hook at a site other than the SAE's (``hook=``)."""
    from personas.steering import steered_generations

    sae = _sae(toy_bridge.model_id, "blocks.1.hook_resid_post", toy_bridge.d_model)
    config = SteerConfig(positions="response", max_new_tokens=6, batch_size=8)
    table = steered_generations(toy_bridge, sae, 3, PROMPTS, [-6.0, 0.0, 6.0], config=config,
                                hook="blocks.0.hook_resid_post")
    assert table["alpha"].tolist() == [-6.0] * 4 + [0.0] * 4 + [6.0] * 4
    for alpha in (-6.0, 0.0, 6.0):
        with steer(toy_bridge, sae, 3, alpha, positions="response", hook="blocks.0.hook_resid_post"):
            expected = [toy_bridge.tokenizer.decode(r, skip_special_tokens=True).strip()
                        for r in _full_sequence_greedy(toy_bridge, PROMPTS, 6)]
        assert table.loc[table["alpha"] == alpha, "generation"].tolist() == expected
    by_alpha = table.groupby("alpha")["generation"].apply(list)
    assert by_alpha[6.0] != by_alpha[0.0] and by_alpha[-6.0] != by_alpha[0.0]  # the strengths differ per row


def test_the_hook_override_steers_the_named_site_only(toy_bridge):
    sae = _sae(toy_bridge.model_id, "blocks.1.hook_resid_post", toy_bridge.d_model)
    ids = torch.tensor([render_prompt(toy_bridge, "my wish is ?")])
    before = {h: _resid(toy_bridge.model, ids, h) for h in ("blocks.0.hook_resid_pre", "blocks.0.hook_resid_post")}
    with steer(toy_bridge, sae, 3, 2.0, hook="blocks.0.hook_resid_pre") as s:
        assert s.hook_name == "blocks.0.hook_resid_pre"
        after = {h: _resid(toy_bridge.model, ids, h) for h in before}
        # a block's input is steered through a pre-hook on the Hugging Face block in cached decoding
        assert _fast(toy_bridge, PROMPTS, 6) == _full_sequence_greedy(toy_bridge, PROMPTS, 6)
    delta = after["blocks.0.hook_resid_pre"] - before["blocks.0.hook_resid_pre"]
    torch.testing.assert_close(delta, (2.0 * sae.W_dec[3].detach()).expand_as(delta))
    assert active_steerings(toy_bridge) == []
    with pytest.raises(PersonasError, match="d_in"):
        with steer(toy_bridge, _sae(toy_bridge.model_id, "blocks.1.hook_resid_post", 32), 3, 1.0,
                   hook="blocks.0.hook_resid_pre"):
            pass


def test_a_site_inside_a_block_falls_back_to_exact_uncached_decoding(toy_bridge):
    site = "blocks.0.hook_mlp_out" if "blocks.0.hook_mlp_out" in toy_bridge.model.hook_dict else None
    if site is None:
        pytest.skip("this TransformerLens bridge has no blocks.0.hook_mlp_out")
    sae = _sae(toy_bridge.model_id, site, toy_bridge.d_model)
    with steer(toy_bridge, sae, 3, 8.0, hook=site):
        fast = _fast(toy_bridge, PROMPTS[:2], 5, batch_size=2)
        assert fast == _full_sequence_greedy(toy_bridge, PROMPTS[:2], 5)
    assert fast != _fast(toy_bridge, PROMPTS[:2], 5)


def test_a_long_prompt_is_cut_to_its_end_to_fit_the_context(toy_model, caplog):
    from personas.steering import prompt_ids

    n_ctx = toy_model.model.cfg.n_ctx
    prompt = " ".join(["debt", "health", "boss"] * 100) + " my wish is ?"
    full = render_prompt(toy_model, prompt)
    assert len(full) > n_ctx
    with caplog.at_level("WARNING", logger="personas.steering"):
        (ids,) = prompt_ids(toy_model, [prompt], max_new_tokens=10)
    assert ids == full[-(n_ctx - 10):] and "cut to its last" in caplog.text
    (answer,) = generate(toy_model, [prompt], max_new_tokens=10)  # runs within the context
    short = render_prompt(toy_model, "my wish is ?")
    assert ids[-6:] == short[-6:]  # the end of the prompt (the question and the template) is kept
    assert isinstance(answer, str)


def test_decoding_stops_at_the_chat_templates_end_of_turn(toy_bridge, toy_tokenizer):
    """A direction that makes ``<|end|>`` (the template's end of turn, not EOS) the top token from the second
    answer token on: every answer stops after one token; the end-of-turn token itself is not in the answer."""
    from personas.steering import decode, prompt_ids
    from personas.steering.generation import _stop_ids

    end = toy_tokenizer.convert_tokens_to_ids("<|end|>")
    assert end != toy_tokenizer.eos_token_id and _stop_ids(toy_tokenizer) == {toy_tokenizer.eos_token_id, end}
    hf = toy_bridge.model.original_model
    direction = hf.lm_head.weight[end].detach() * hf.transformer.ln_f.weight.detach()
    direction = direction - direction.mean()
    sae = _sae(toy_bridge.model_id, "blocks.1.hook_resid_post", toy_bridge.d_model, direction / direction.norm())
    rows = prompt_ids(toy_bridge, PROMPTS)
    plain = decode(toy_bridge, rows, max_new_tokens=6)
    assert all(len(r) == 6 for r in plain)
    with steer(toy_bridge, sae, 3, 200.0, positions="response"):
        stopped = decode(toy_bridge, rows, max_new_tokens=6)
    assert [len(r) for r in stopped] == [1] * len(PROMPTS) and all(end not in r for r in stopped)
    assert [r[0] for r in stopped] == [r[0] for r in plain]
