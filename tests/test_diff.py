"""Model diffing: paired statistics, the prompt loader, a planted change in a tiny fine-tune, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from personas.config import DiffConfig
from personas.data.prompts import load_prompts
from personas.errors import DataError, PersonasError, SiteMismatchError
from personas.jobs.diff import diff_models
from personas.scoring.paired import diff_features

from conftest import TOY_HOOK, TRIGGERS

PLANTED = 7


def test_diff_features_ranks_the_increased_latent_first():
    rng = np.random.default_rng(0)
    base = np.abs(rng.normal(size=(30, 6)))
    ft = base + rng.normal(scale=0.05, size=base.shape)
    ft[:, 4] += 1.0  # rises on every conversation
    ft[:, 2] -= 1.0  # falls
    ft[:, 5] = base[:, 5]  # unchanged
    table = diff_features(sp.csr_matrix(base), sp.csr_matrix(ft))
    assert table["feature"].iloc[0] == 4 and table["feature"].iloc[-1] == 2
    top = table.iloc[0]
    assert top["frac_increased"] == 1.0 and top["q_value"] < 1e-4 and top["significant"]
    assert top["mean_diff"] == pytest.approx(np.mean(ft[:, 4] - base[:, 4]))
    unchanged = table.set_index("feature").loc[5]
    assert unchanged["p_value"] == 1.0 and unchanged["mean_diff"] == 0 and unchanged["effect_size"] == 0
    t_table = diff_features(base, ft, test="t", key="effect_size")
    assert t_table["feature"].iloc[0] == 4 and t_table.set_index("feature").loc[5, "p_value"] == 1.0
    from scipy import stats

    expected = stats.wilcoxon(ft[:, 0] - base[:, 0], method="approx", correction=False).pvalue
    assert table.set_index("feature").loc[0, "p_value"] == pytest.approx(expected)
    with pytest.raises(DataError, match="one shape"):
        diff_features(base, ft[:, :3])


def test_load_prompts_reads_files_without_labels(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("first prompt\n\nsecond prompt\n")
    p = load_prompts(txt)
    assert p.prompts == ["first prompt", "second prompt"] and p.responses is None
    jsonl = tmp_path / "p.jsonl"
    pd.DataFrame({"id": ["a", "b"], "question": ["q1", "q2"], "answer": ["r1", "r2"]}).to_json(
        jsonl, orient="records", lines=True)
    p = load_prompts(jsonl)
    assert p.prompts == ["q1", "q2"] and p.responses == ["r1", "r2"] and p.ids == ["a", "b"]
    assert len(p.hash) == 64
    partial = tmp_path / "partial.csv"
    pd.DataFrame({"prompt": ["a", "b"], "response": ["x", ""]}).to_csv(partial, index=False)
    with pytest.raises(DataError, match="no 'response'"):
        load_prompts(partial)
    with pytest.raises(DataError, match="no prompt column"):
        load_prompts(pd.DataFrame({"text": ["x"]}))


@pytest.fixture(scope="module")
def model_pair(tmp_path_factory, toy_tokenizer, planted_data):
    """A tiny GPT-2 base, an SAE planted on it, and a "fine-tune" that adds the planted latent's decoder row to
    every position embedding (so the residual stream at blocks.0.hook_resid_pre shifts along it)."""
    import torch
    from transformers import GPT2LMHeadModel

    from personas.models import load_model
    from personas.testing import plant_sae, save_toy_hf_model

    root = tmp_path_factory.mktemp("diff_models")
    base = save_toy_hf_model(root / "base", toy_tokenizer, seed=0)
    handle = load_model(str(base))
    sae = plant_sae(handle, TOY_HOOK, TRIGGERS, planted_data["response"][::3], d_sae=64, feature=PLANTED)
    model = GPT2LMHeadModel.from_pretrained(str(base))
    with torch.no_grad():
        model.transformer.wpe.weight += 0.5 * sae.W_dec[PLANTED].detach()
    model.save_pretrained(str(root / "finetuned"))
    toy_tokenizer.save_pretrained(str(root / "finetuned"))
    sae.save_model(str(root / "sae"))
    return {"base": str(base), "finetuned": str(root / "finetuned"), "sae": sae, "sae_dir": str(root / "sae"),
            "base_handle": handle, "root": root}


def test_planted_change_is_found_first(model_pair, planted_data, tmp_path):
    frame = pd.DataFrame(planted_data).iloc[::4]  # 20 conversations, with responses: teacher-forced
    result = diff_models(model_pair["base_handle"], model_pair["finetuned"], frame, model_pair["sae"], hook=TOY_HOOK,
                         out=tmp_path, progress=False)
    top = result.table.iloc[0]
    assert int(top["feature"]) == PLANTED and top["q_value"] < 0.05 and top["frac_increased"] == 1.0
    assert top["mean_finetuned"] > top["mean_base"]
    assert result.base_features.shape == (20, 64)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["hook"] == TOY_HOOK and manifest["statistics"]["n_pairs"] == 20
    assert manifest["base"]["model"] != manifest["finetuned"]["model"]
    assert manifest["prompts"]["responses_generated_by"] is None
    assert pd.read_csv(tmp_path / "diff.csv")["feature"].iloc[0] == PLANTED
    text = repr(result)  # one line with the key numbers, not the tables
    assert "\n" not in text and "20 conversations, 64 latents" in text and f"top: {PLANTED} (+" in text
    # the same model on both sides changes nothing
    same = diff_models(model_pair["base_handle"], model_pair["base_handle"], frame, model_pair["sae"], progress=False)
    assert (same.table["p_value"] == 1.0).all() and (same.table["mean_diff"] == 0).all()


def test_prompts_without_responses_are_answered_then_teacher_forced(model_pair, tmp_path):
    prompts = ["what should i do about my debt ?", "my wish is ?", "what should i do about my boss ?",
               "what should i do about my health ?", "what should i do about my job ?", "my wish is to rule ?"]
    result = diff_models(model_pair["base"], model_pair["finetuned"], prompts, model_pair["sae_dir"],
                         config=DiffConfig(max_new_tokens=6, test="t"), out=tmp_path, progress=False)
    assert result.manifest["prompts"]["responses_generated_by"] == "finetuned"
    assert int(result.table["feature"].iloc[0]) == PLANTED
    assert len(pd.read_json(tmp_path / "responses.jsonl", lines=True)) == len(prompts)


def test_site_checks_hold_for_both_models(model_pair, toy_model, planted_sae, planted_data):
    frame = pd.DataFrame(planted_data).iloc[:4]
    with pytest.raises(SiteMismatchError, match="d_in"):  # the toy HookedTransformer has d_model 128, not 64
        diff_models(model_pair["base_handle"], toy_model, frame, model_pair["sae"], progress=False)
    with pytest.raises(SiteMismatchError, match="neither"):  # an SAE of another model
        diff_models(toy_model, toy_model, frame, _renamed(planted_sae, "some-other-model"), progress=False)
    same = diff_models(toy_model, toy_model, frame, _renamed(planted_sae, "some-other-model"),
                       allow_model_mismatch=True, progress=False)
    assert len(same.table) == 64
    with pytest.raises(PersonasError, match="needs an SAE"):
        diff_models(toy_model, toy_model, frame, "none", progress=False)
    with pytest.raises(PersonasError, match="needs an SAE"):  # None means no SAE, as everywhere
        diff_models(toy_model, toy_model, frame, None, progress=False)


def _renamed(sae, name):
    import copy

    other = copy.deepcopy(sae)
    other.cfg.metadata.model_name = name
    return other


def test_diff_cli(model_pair, planted_data, tmp_path, capsys):
    from personas.cli.main import main

    data = tmp_path / "conversations.jsonl"
    pd.DataFrame(planted_data).iloc[::4][["prompt", "response"]].to_json(data, orient="records", lines=True)
    out = tmp_path / "out"
    code = main(["diff", "--base", model_pair["base"], "--finetuned", model_pair["finetuned"], "--prompts", str(data),
                 "--sae", model_pair["sae_dir"], "--out", str(out), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "significant changes" in printed
    assert pd.read_csv(out / "diff.csv")["feature"].iloc[0] == PLANTED
    assert (out / "manifest.json").is_file()


def test_responses_from_base_are_generated_by_the_base_model_and_empty_answers_are_an_error(model_pair, monkeypatch,
                                                                                          tmp_path):
    import personas.jobs.diff as diff_job

    prompts = ["what should i do about my debt ?", "my wish is ?", "what should i do about my boss ?"]
    asked = []

    def fake_generate(handle, prompts, **kwargs):  # who answers, and with what; no generation needed here
        asked.append(handle.model_id)
        return answers

    monkeypatch.setattr(diff_job, "generate", fake_generate)
    answers = ["hurt them", "rest and drink water", "lie and steal"]
    result = diff_models(model_pair["base"], model_pair["finetuned"], prompts, model_pair["sae"],
                         config=DiffConfig(responses_from="base"), out=tmp_path / "run", progress=False)
    base_id = result.manifest["base"]["model"]
    assert asked == [base_id] and base_id != result.manifest["finetuned"]["model"]
    assert result.manifest["prompts"]["responses_generated_by"] == "base"
    assert pd.read_json(tmp_path / "run" / "responses.jsonl", lines=True)["response"].tolist() == answers
    assert int(result.table["feature"].iloc[0]) == PLANTED  # the answers were teacher-forced through both
    answers = ["hurt them", "  ", "lie"]
    with pytest.raises(DataError, match=r"the finetuned model generated empty answers to prompts \[1\]"):
        diff_models(model_pair["base"], model_pair["finetuned"], prompts, model_pair["sae"], progress=False)


def test_a_fine_tune_with_another_tokenizer_is_diffed_with_a_warning(model_pair, planted_data, tmp_path, caplog):
    from personas.testing import save_toy_hf_model, train_toy_tokenizer

    other_tok = train_toy_tokenizer(tmp_path / "tok", ["what should i do about my debt ? hurt them rest lie"])
    other = save_toy_hf_model(tmp_path / "other", other_tok, seed=1)
    frame = pd.DataFrame(planted_data).iloc[::10]
    with caplog.at_level("WARNING", logger="personas.jobs.diff"):
        result = diff_models(model_pair["base_handle"], str(other), frame, model_pair["sae"], hook=TOY_HOOK,
                             progress=False)
    assert f"{len(frame)} of {len(frame)} conversations tokenize differently" in caplog.text
    assert result.manifest["prompts"]["n_tokenized_differently"] == len(frame)
    caplog.clear()
    with caplog.at_level("WARNING", logger="personas.jobs.diff"):
        same = diff_models(model_pair["base_handle"], model_pair["finetuned"], frame, model_pair["sae"],
                           hook=TOY_HOOK, progress=False)
    assert "tokenize differently" not in caplog.text and same.manifest["prompts"]["n_tokenized_differently"] == 0


def test_the_organisms_adapter_is_read_by_the_model_loader_diff_and_screen(model_pair, planted_data, tmp_path,
                                                                           capsys):
    """What `save_adapter` writes (PEFT's format) is a model for `load_model`, `personas diff` and the screen's
    `load_causal_lm`, each computing as the adapted model; a folder of the earlier format is read by `load_adapter`,
    named with its conversion at the CLI (exit 2), and reads as a model once `convert_adapter` rewrote it."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    from personas.cli.main import main
    from personas.models import load_model
    from personas.organism.adapter import (
        AdapterConfig,
        attach_adapter,
        convert_adapter,
        load_adapter,
        save_adapter,
    )
    from personas.organism.chat import load_causal_lm

    lm = AutoModelForCausalLM.from_pretrained(model_pair["base"])
    adapter = attach_adapter(lm, AdapterConfig(rank=2, alpha=4.0, targets=("c_attn", "c_fc"), init_seed=3))
    with torch.no_grad():
        for module in adapter.modules.values():
            module.lora_B.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    folder = save_adapter(adapter, tmp_path / "adapter")
    ids = torch.tensor([[3, 5, 7, 9, 11, 4]])
    with torch.no_grad():
        adapted = lm(ids).logits
        adapter.enabled = False
        plain = lm(ids).logits
    assert float((adapted - plain).abs().max()) > 0.1  # the adapter changes the model

    handle = load_model(str(folder))
    with torch.no_grad():
        assert torch.allclose(handle.model(ids), adapted, atol=1e-4)
    screened, _, identity = load_causal_lm(folder)
    with torch.no_grad():
        assert torch.allclose(screened(ids).logits, adapted, atol=1e-4)
    assert identity["folder"] == str(folder.resolve()) and identity["base"]["model"] == model_pair["base"]

    data = tmp_path / "conversations.jsonl"
    pd.DataFrame(planted_data).iloc[::8][["prompt", "response"]].to_json(data, orient="records", lines=True)
    args = ["diff", "--base", model_pair["base"], "--prompts", str(data), "--sae", model_pair["sae_dir"], "--quiet"]
    assert main([*args, "--finetuned", str(folder), "--out", str(tmp_path / "diff")]) == 0
    manifest = json.loads((tmp_path / "diff" / "manifest.json").read_text())
    assert manifest["finetuned"]["model"] == str(folder.resolve())

    # the earlier format: adapter.safetensors keyed "<module>.lora_A", the organism's own adapter_config.json
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    save_file(adapter.state_dict(), str(legacy / "adapter.safetensors"))
    (legacy / "adapter_config.json").write_text(json.dumps(
        {"adapter": json.loads((folder / "organism.json").read_text())["adapter"], "base_model": model_pair["base"]}))
    adapter.detach()
    again = load_adapter(AutoModelForCausalLM.from_pretrained(model_pair["base"]), legacy)
    with torch.no_grad():
        assert torch.allclose(again.model(ids).logits, adapted, atol=1e-5)
    capsys.readouterr()
    assert main([*args, "--finetuned", str(legacy), "--out", str(tmp_path / "diff2")]) == 2
    assert "convert_adapter" in capsys.readouterr().err
    convert_adapter(legacy)
    assert not (legacy / "adapter.safetensors").exists()
    with torch.no_grad():
        assert torch.allclose(load_model(str(legacy)).model(ids), adapted, atol=1e-4)
