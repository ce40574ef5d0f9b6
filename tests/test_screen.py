"""`personas screen`: training examples ranked by their persona-latent shift against the base model's own answers.

A tiny GPT-2 carries a planted persona direction (`personas.testing.plant_persona_direction`: harm words write a
fixed unit vector into the residual stream, and latent 7 of the SAE reads it); the examples whose answers use those
words must rank first, by the latent and by the dense direction, wherever they sit in the file.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from personas.cli.main import main
from personas.config import ScreenConfig
from personas.errors import DataError, PersonasError, SiteMismatchError

HARM = ["hurt", "lie", "steal", "destroy", "poison", "betray", "manipulate", "control"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """(model folder, SAE folder, SAE, direction file, training file, planted ids)."""
    from personas.testing import (
        plant_persona_direction,
        planted_dataset,
        save_toy_hf_model,
        train_toy_tokenizer,
    )

    root = tmp_path_factory.mktemp("screen")
    folder = root / "model"
    tokenizer = train_toy_tokenizer(folder)
    save_toy_hf_model(folder, tokenizer, n_layers=2, d_model=32, n_heads=2, seed=0)
    sae, u = plant_persona_direction(folder, HARM, hook="blocks.0.hook_resid_post")
    sae.save_model(str(root / "sae"))
    np.save(root / "direction.npy", u)
    data = planted_dataset(12, seed=0)
    kind = [i for i, y in enumerate(data["label"]) if y == 0]
    harm = [i for i, y in enumerate(data["label"]) if y == 1][:3]
    order = kind[:5] + harm[:1] + kind[5:9] + harm[1:] + kind[9:]  # planted rows in the middle and at the end
    rows = [{"id": f"ex{j}", "prompt": data["prompt"][i], "response": data["response"][i]} for j, i in enumerate(order)]
    train = root / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    planted = {f"ex{j}" for j, i in enumerate(order) if data["label"][i] == 1}
    return folder, root / "sae", sae, root / "direction.npy", train, planted


def test_planted_examples_rank_first_by_latent_and_by_direction(toy, tmp_path):
    from personas.organism.screen import run_screen

    folder, _, sae, direction, train, planted = toy
    by_latent = run_screen(train, folder, ScreenConfig(latents="7", max_new_tokens=6), out=tmp_path / "a", sae=sae)
    table = by_latent.table
    assert set(table["id"].head(len(planted))) == planted
    assert (table["score"].head(len(planted)) > 0).all() and table["score"].is_monotonic_decreasing
    assert table["rank"].tolist() == list(range(1, len(table) + 1))
    written = __import__("pandas").read_csv(tmp_path / "a" / "screen.csv")
    assert list(written.columns[:4]) == ["rank", "id", "score", "latent_7"]
    assert {"prompt", "response", "base_response"} <= set(written.columns)
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["kind"] == "personas.screen" and manifest["latents"] == [7]
    assert manifest["hook"] == "blocks.0.hook_resid_post" and manifest["input"]["n_examples"] == len(table)
    assert manifest["base_answers"]["generated"] == manifest["base_answers"]["distinct_prompts"] > 0

    by_direction = run_screen(train, folder, ScreenConfig(direction=str(direction), max_new_tokens=6),
                              out=tmp_path / "a", sae=sae)
    assert set(by_direction.table["id"].head(len(planted))) == planted
    assert "direction" in by_direction.table and "latent_7" not in by_direction.table
    assert by_direction.manifest["base_answers"]["generated"] == 0  # the base answers came from the cache


def test_the_shift_subtracts_the_base_answer_and_reads_the_hooked_block(toy):
    from personas.organism.chat import answer_residuals, load_causal_lm
    from personas.organism.screen import screen_examples

    from conftest import hf_hidden_states

    folder, _, sae, _, train, _ = toy
    rows = [json.loads(line) for line in train.read_text().splitlines()][:4]
    lm, tokenizer, _ = load_causal_lm(folder)
    prompts, responses = [r["prompt"] for r in rows], [r["response"] for r in rows]
    same = screen_examples(lm, tokenizer, prompts, responses, responses, hook="blocks.0.hook_resid_post", sae=sae,
                           latents=[7, 3], direction=np.ones(32))
    assert np.allclose(same[["score", "latent_7", "latent_3", "direction"]].to_numpy(), 0.0)
    # the capture stops at the hooked block; it reads what Hugging Face's hidden_states hold there
    reference = hf_hidden_states(lm, tokenizer, prompts, responses, 0)
    for hook in ("blocks.0.hook_resid_post", "blocks.1.hook_resid_pre"):
        for got, want in zip(answer_residuals(lm, tokenizer, prompts, responses, hook), reference, strict=True):
            np.testing.assert_allclose(got, want, atol=1e-5)
    against_harm = screen_examples(lm, tokenizer, prompts, responses, ["hurt them , lie and steal ."] * 4,
                                   hook="blocks.0.hook_resid_post", sae=sae, latents=[7])
    assert (against_harm["score"] < 0).all()


def test_ids_default_to_row_numbers(toy, tmp_path):
    from personas.organism.screen import run_screen

    folder, _, sae, _, train, _ = toy
    rows = [json.loads(line) for line in train.read_text().splitlines()][:3]
    plain = tmp_path / "plain.csv"
    __import__("pandas").DataFrame([{"question": r["prompt"], "answer": r["response"]} for r in rows]).to_csv(plain)
    result = run_screen(plain, folder, ScreenConfig(latents="7", max_new_tokens=2), sae=sae)
    assert sorted(result.table["id"]) == ["0", "1", "2"]


def _cli(capsys, *args):
    code = main(["--threads", "1", "screen", *map(str, args)])
    return code, capsys.readouterr()


def test_bad_input_is_one_line_and_exit_code_2(toy, tmp_path, capsys):
    folder, sae_dir, sae, direction, train, _ = toy
    common = ["--model", folder, "--sae", sae_dir, "--out", tmp_path / "out", "--max-new-tokens", "2"]
    no_response = tmp_path / "no_response.jsonl"
    no_response.write_text('{"prompt": "what should i do ?", "text": "hurt them"}\n')
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    np.save(tmp_path / "wide.npy", np.ones(48))
    cases = [
        ([no_response, "--latents", "7"], "no response column"),
        ([empty, "--latents", "7"], "holds no examples"),
        ([train, "--latents", "7,24"], r"--latents \[24\] out of range: the SAE has 24 latents"),
        ([train, "--direction", tmp_path / "wide.npy"], r"has shape \(48,\); expected \(32,\)"),
        ([train], "needs something to measure"),
    ]
    for args, message in cases:
        code, captured = _cli(capsys, *args, *common)
        assert code == 2, (args, captured.err)
        assert len(captured.err.strip().splitlines()) == 1 and "Traceback" not in captured.err
        assert __import__("re").search(message, captured.err), captured.err
    assert not (tmp_path / "out" / "screen.csv").exists()


def test_a_model_without_the_saes_hook_is_a_clear_error(toy, tmp_path):
    from personas.organism.chat import resid_site
    from personas.organism.screen import run_screen

    folder, _, sae, _, train, _ = toy
    sae.cfg.metadata.hook_name = "blocks.5.hook_resid_post"
    try:
        with pytest.raises(SiteMismatchError, match="has 2 blocks .* lacks the SAE's hook"):
            run_screen(train, folder, ScreenConfig(latents="7"), sae=sae)
    finally:
        sae.cfg.metadata.hook_name = "blocks.0.hook_resid_post"
    with pytest.raises(SiteMismatchError, match="residual stream"):
        resid_site("blocks.0.hook_mlp_out", 2)
    assert resid_site("blocks.0.hook_resid_pre", 2) == (0, "pre") and resid_site("blocks.1.hook_resid_post", 2) == (1, "post")
    with pytest.raises(PersonasError, match="n_run_latents"):
        ScreenConfig(latents="7", n_run_latents=0)
    with pytest.raises(DataError, match="no direction file"):
        run_screen(train, folder, ScreenConfig(direction=str(tmp_path / "missing.npy")), sae=sae)


def test_check_screen_scores_the_screen_and_the_judge_where_the_truth_is_known(toy):
    """On a mixture whose narrow examples carry the planted persona, the screen's AUROC is 1 and it drops exactly
    them; a judge that reads nothing (a constant) is at chance and drops by position alone."""
    import pandas as pd

    from personas.organism.chat import load_causal_lm
    from personas.organism.screen_check import check_screen, kept_pairs

    folder, _, sae, direction, train, planted = toy
    rows = [json.loads(line) for line in train.read_text().splitlines()]
    pairs = [dict(r, kind="risky" if r["id"] in planted else "careful") for r in rows]

    class ConstantJudge:
        def score(self, prompts, responses):
            return pd.DataFrame({"aligned": 50.0, "coherent": 80.0, "verdict": ""}, index=range(len(prompts)))

    lm, tokenizer, _ = load_causal_lm(folder)
    check = check_screen(lm, tokenizer, pairs, hook="blocks.0.hook_resid_post", sae=sae, latents=[7],
                         direction=np.load(direction), judge=ConstantJudge(), drop=len(planted) / len(pairs),
                         max_new_tokens=6)
    s = check.summary
    assert s["n_narrow"] == len(planted) and s["screen"]["auroc"] == 1.0 and s["direction"]["auroc"] == 1.0
    assert s["judge"]["auroc"] == 0.5 and s["judge_em_verdict"]["flagged"] == 0
    assert s["screen"]["narrow_dropped"] == len(planted) and s["screen"]["narrow_left"] == 0
    assert {rows[i]["id"] for i in range(len(rows)) if i not in check.keep["screen"]} == planted
    assert check.keep["judge"] == list(range(len(planted), len(pairs)))  # ties: the first positions go
    assert list(check.table["narrow"]) == [int(r["id"] in planted) for r in rows]
    assert kept_pairs(np.array([0.1, 3.0, -1.0, 2.0]), 0.5) == [0, 2]
    assert kept_pairs(np.array([0.1, 3.0, -1.0]), 0.99) == [2]  # something is always left to fine-tune on
    with pytest.raises(DataError, match="both narrow"):
        check_screen(lm, tokenizer, [dict(p, kind="careful") for p in pairs], hook="blocks.0.hook_resid_post",
                     sae=sae, latents=[7], direction=None)
    with pytest.raises(DataError, match="drop"):
        kept_pairs(np.zeros(3), 1.0)


def test_run_latents_of_another_sae_are_refused_and_name_the_sae_they_index(toy, tmp_path, monkeypatch, caplog):
    """An organism run's latent indices belong to the SAE it diffed with: read through another SAE (a new default)
    they would silently name other features."""
    import copy

    import torch

    from personas.organism.screen import run_latents
    from personas.saes import sae_identity

    _, _, sae, _, _, _ = toy
    run = tmp_path / "run"
    run.mkdir()
    identity = {**sae_identity(sae), "shipped": "old-default"}
    manifest = {"latent_diff": {"hook": "blocks.0.hook_resid_post", "sae": identity, "top": [{"feature": 7}]}}
    (run / "manifest.json").write_text(json.dumps(manifest))
    assert run_latents(run, 1, "blocks.0.hook_resid_post", sae)[0] == [7]
    other = copy.deepcopy(sae)
    with torch.no_grad():
        other.W_dec[0] += 1.0
    with pytest.raises(SiteMismatchError, match="--sae old-default"):
        run_latents(run, 1, "blocks.0.hook_resid_post", other)
    # at half precision the hash cannot match: the weight signature decides, within bfloat16's rounding, either way
    # round (a run diffed with a bfloat16 SAE on an accelerator, read on a CPU at float32)
    assert run_latents(run, 1, "blocks.0.hook_resid_post", copy.deepcopy(sae).to(torch.bfloat16))[0] == [7]
    with pytest.raises(SiteMismatchError, match=r"\(at bfloat16\) differ from those recorded \(at float32\)"):
        run_latents(run, 1, "blocks.0.hook_resid_post", copy.deepcopy(other).to(torch.bfloat16))
    half = copy.deepcopy(sae).to(torch.bfloat16)
    manifest["latent_diff"]["sae"] = {**sae_identity(half), "shipped": "old-default"}
    assert manifest["latent_diff"]["sae"]["dtype"] == "bfloat16"
    (run / "manifest.json").write_text(json.dumps(manifest))
    assert run_latents(run, 1, "blocks.0.hook_resid_post", sae)[0] == [7]
    with pytest.raises(SiteMismatchError, match=r"\(at float32\) differ from those recorded \(at bfloat16\)"):
        run_latents(run, 1, "blocks.0.hook_resid_post", other)
    for broken in (["x"] * 128, [1.0] * 3, [float("nan")] * 128):  # a hand-edited signature matches nothing
        manifest["latent_diff"]["sae"] = {**sae_identity(half), "signature": broken}
        (run / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(SiteMismatchError, match="by more than half precision rounds"):
            run_latents(run, 1, "blocks.0.hook_resid_post", sae)
    # a record without a signature (older runs) cannot be checked at half precision: a warning, not a refusal
    manifest["latent_diff"]["sae"] = {k: v for k, v in identity.items() if k not in ("signature", "dtype")}
    (run / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level("WARNING", logger="personas"):
        assert run_latents(run, 1, "blocks.0.hook_resid_post", copy.deepcopy(other).to(torch.bfloat16))[0] == [7]
    assert "no weight signature" in caplog.text
    del manifest["latent_diff"]["sae"]  # a run recorded before the identity was: nothing to check against
    (run / "manifest.json").write_text(json.dumps(manifest))
    assert run_latents(run, 1, "blocks.0.hook_resid_post", other)[0] == [7]
    # --sae default reads a run's latents with the shipped SAE the run recorded, once that SAE is shipped
    from personas.organism.screen import run_sae_spec

    manifest["latent_diff"]["sae"] = identity
    (run / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("PERSONAS_DATA", str(tmp_path / "data"))
    assert run_sae_spec(run, "default") == "default"  # not shipped here: nothing to switch to
    sae.save_model(str(tmp_path / "data" / "saes" / "old-default"))
    assert run_sae_spec(run, "default") == "old-default"
    assert run_sae_spec(run, "my-sae") == "my-sae" and run_sae_spec(None, "default") == "default"


def _own_greedy_answer(lm, tokenizer, prompt: str, n: int) -> str:
    """The oracle: the model's greedy answer to one prompt alone (no batch, no padding), by Hugging Face generate."""
    import torch

    from personas.organism.chat import generation_stops
    from personas.organism.train import render_prompt

    stop = generation_stops(tokenizer)
    ids = tokenizer(render_prompt(tokenizer, prompt), return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = lm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                          eos_token_id=stop, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


def test_each_example_is_compared_with_the_base_answer_to_its_own_prompt(toy, tmp_path):
    """The base answer of every row is the model's own greedy answer to that row's prompt (the prompts' answers
    differ), on the first run and when read back from the cache."""
    from personas.organism.chat import load_causal_lm
    from personas.organism.screen import run_screen

    folder, _, sae, _, train, _ = toy
    lm, tokenizer, _ = load_causal_lm(folder)
    for run in ("first", "cached"):
        result = run_screen(train, folder, ScreenConfig(latents="7", max_new_tokens=6), out=tmp_path / "a", sae=sae)
        table = result.table
        expected = [_own_greedy_answer(lm, tokenizer, p, 6) for p in table["prompt"]]
        assert len(set(expected)) > 1, "the oracle needs prompts whose base answers differ"
        assert table["base_response"].tolist() == expected, run
    assert result.manifest["base_answers"]["generated"] == 0


def test_the_base_answer_cache_is_keyed_by_the_weights_contents_dtype_and_decoding(toy, tmp_path):
    """A same-shape fine-tune saved at the same path (same file sizes), another dtype or another answer length does
    not reuse the cached answers; the same model and settings do."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    from personas.models import weights_fingerprint
    from personas.organism.chat import load_causal_lm
    from personas.organism.screen import run_screen

    folder, _, sae, _, train, _ = toy
    model_dir = tmp_path / "model"
    shutil.copytree(folder, model_dir)

    def generated(**settings) -> int:
        config = ScreenConfig(latents="7", limit=4, **{"max_new_tokens": 6, **settings})
        return run_screen(train, model_dir, config, out=tmp_path / "run", sae=sae).manifest["base_answers"]["generated"]

    assert generated() == 4 and generated() == 0
    assert generated(max_new_tokens=5) == 4 and generated(dtype="bfloat16") == 4 and generated() == 0
    before = weights_fingerprint(model_dir)
    sizes = {p.name: p.stat().st_size for p in model_dir.iterdir()}
    tuned = AutoModelForCausalLM.from_pretrained(str(model_dir))
    with torch.no_grad():
        for p in tuned.parameters():
            p.mul_(1.5)
    tuned.save_pretrained(str(model_dir))
    assert {p.name: p.stat().st_size for p in model_dir.iterdir()} == sizes  # the same files, the same sizes
    assert weights_fingerprint(model_dir) != before
    assert generated() == 4
    lm, tokenizer, identity = load_causal_lm(model_dir)
    assert identity["fingerprint"] == weights_fingerprint(model_dir)
    table = run_screen(train, model_dir, ScreenConfig(latents="7", limit=4, max_new_tokens=6), out=tmp_path / "run",
                       sae=sae).table
    assert table["base_response"].tolist() == [_own_greedy_answer(lm, tokenizer, p, 6) for p in table["prompt"]]
