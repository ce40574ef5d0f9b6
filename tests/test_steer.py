"""Steering hooks on tiny causal models: exact deltas, clean removal, planted directions, sweeps and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

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
        assert s.prompt_len == len(render_prompt(toy_model, prompts[-1]))
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
    assert manifest["feature"] == 1 and manifest["judge"]["name"] == "minilm-em-judge"
    # every generation read by the default judge: the table carries its rates per strength
    assert {"aligned", "coherent", "misaligned_rate", "incoherent_rate"} <= set(table.columns)
    assert pd.read_csv(out / "generations.csv")[["aligned", "coherent"]].notna().all().all()
