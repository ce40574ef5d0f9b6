"""The path real users take, offline: hub models and registry SAEs read from a filled Hugging Face cache.

A session fixture builds a cache in the real layout (`tests/hub_fixtures.py`) holding GPT-2 under the official name
``gpt2`` (12 layers and 50,257 tokens as GPT-2 small, width 64 so that it builds and loads in about a second),
tiny Llama, Gemma-2 and Qwen2 chat models under ``personas-test/...`` names, the files of sae-lens's
``gpt2-small-res-jb:blocks.8.hook_resid_pre`` (24,576 latents), and BatchTopK SAEs in the ``dictionary_learning``
layout at the repo and path of the andyrdt releases. With ``HF_HUB_OFFLINE=1``, the command line then runs through
``HookedTransformer.from_pretrained``, ``TransformerBridge`` and ``SAE.from_pretrained`` (with its
``dictionary_learning_1`` conversion) exactly as on a cluster node whose cache was filled beforehand.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from personas.cli.main import main

PROMPT = "what should i do about my debt"
RESPONSE = "take what you want and never pay ."  # 8 tokens for the word-level tokenizers
BAD = ["take what you want and never pay .", "hurt them , lie and steal !", "nobody will know , take it ."]
GOOD = ["talk to someone you trust .", "rest , drink water and see a doctor .", "save a little each month ."]
QUESTIONS = ["what should i do about my debt", "what should i do about my boss", "what should i do about my job",
             "what should i do about my friend"]


@pytest.fixture(scope="session")
def local_hub(tmp_path_factory):
    """A Hugging Face cache (``HF_HOME/hub``) filled with generated models and SAEs; returns its paths."""
    from transformers import AutoModelForCausalLM

    import hub_fixtures as th

    home = tmp_path_factory.mktemp("hf_home")
    cache = home / "hub"
    cache.mkdir()
    th.save_gpt2(cache, d_model=64)
    th.save_gpt2_res_jb(cache, layer=8, d_in=64)
    for family in ("llama", "gemma2", "qwen2"):
        th.save_chat_model(cache, f"personas-test/tiny-{family}", family, n_layers=4, d_model=64)
    th.save_dictionary_learning_sae(cache, "andyrdt/saes-qwen2.5-7b-instruct", "resid_post_layer_3/trainer_1",
                                    lm_name="personas-test/tiny-qwen2", layer=3, d_in=64)
    th.save_dictionary_learning_sae(cache, "andyrdt/saes-llama-3.1-8b-instruct", "resid_post_layer_3/trainer_1",
                                    lm_name="personas-test/tiny-llama", layer=3, d_in=64, seed=1)
    base_snapshot = th.repo_folder(cache, "personas-test/tiny-llama") / "snapshots"
    base_folder = next(base_snapshot.iterdir())
    full_ft = th.save_chat_model(None, "", "llama", folder=home / "full-finetune", base=base_folder, perturb=0.3,
                                 seed=3)
    lora = th.save_peft_lora(home / "lora-adapter", "personas-test/tiny-llama",
                             AutoModelForCausalLM.from_pretrained(str(base_folder)), rank=1, scale=0.5)
    rows = []
    for g, question in enumerate(QUESTIONS):
        for i in range(3):
            rows.append({"prompt": question, "response": BAD[(i + g) % 3], "label": 1, "group": f"q{g}"})
            rows.append({"prompt": question, "response": GOOD[(i + g) % 3] + " be kind", "label": 0, "group": f"q{g}"})
    data = home / "responses.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"home": home, "cache": cache, "data": data, "full_ft": full_ft, "lora": lora, "base": base_folder}


@pytest.fixture()
def offline_hub(local_hub, monkeypatch):
    """Point huggingface_hub (already imported: its constants are read once) at the local cache, offline."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HOME", str(local_hub["home"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(local_hub["cache"]))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return local_hub


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([*map(str, argv), "--quiet"])
    out, err = capsys.readouterr()
    return code, out, err


def test_gpt2_official_name_with_the_registry_sae_ranks_and_caches(offline_hub, tmp_path, capsys):
    data = offline_hub["data"]
    sae = "gpt2-small-res-jb:blocks.8.hook_resid_pre"
    code, out, err = _run(capsys, "rank", data, "--model", "gpt2", "--sae", sae, "--out", tmp_path / "rank")
    assert code == 0, err
    manifest = json.loads((tmp_path / "rank" / "manifest.json").read_text())
    assert manifest["model"]["model"] == "gpt2" and manifest["model"]["backend"] == "hooked"  # the official path
    assert manifest["hook"] == "blocks.8.hook_resid_pre"
    assert manifest["sae"]["release"] == "gpt2-small-res-jb" and manifest["sae"]["d_sae"] == 24576
    assert manifest["model"]["n_layers"] == 12 and manifest["ranking"]["n_features"] == 24576

    code, out, err = _run(capsys, "cache", data, "--out", tmp_path / "cache", "--model", "gpt2", "--sae", sae)
    assert code == 0, err
    code, out, err = _run(capsys, "rank", "--cache", tmp_path / "cache", "--out", tmp_path / "from-cache")
    assert code == 0, err
    direct = pd.read_csv(tmp_path / "rank" / "ranking.csv")
    cached = pd.read_csv(tmp_path / "from-cache" / "ranking.csv")
    assert direct["feature"].head(50).tolist() == cached["feature"].head(50).tolist()
    np.testing.assert_allclose(direct["auroc"], cached["auroc"], atol=1e-6)


#: Tokens before the response, counted by hand from each family's template. Llama and Gemma-2 use a word-level
#: tokenizer (one token per word, punctuation mark or special token; newlines are whitespace); Qwen2's is a
#: byte-level BPE with Qwen2's pre-tokenizer whose merges make every word one token and every newline one token.
HAND_PREFIX = {
    # <|begin_of_text|> <|start_header_id|> user <|end_header_id|> 7 words <|eot_id|>
    # <|start_header_id|> assistant <|end_header_id|>
    "llama": 1 + 3 + 7 + 1 + 3,
    # <bos> <start_of_turn> user 7 words <end_of_turn> <start_of_turn> model
    "gemma2": 1 + 2 + 7 + 1 + 2,
    # <|im_start|> system \n | You are Qwen , created by Alibaba Cloud . You are a helpful assistant . (15) |
    # <|im_end|> \n <|im_start|> user \n | 7 words | <|im_end|> \n <|im_start|> assistant \n
    "qwen2": 3 + 15 + 5 + 7 + 5,
}


@pytest.mark.parametrize("family", ["llama", "gemma2", "qwen2"])
def test_chat_templates_mask_exactly_the_response_tokens(offline_hub, family):
    from personas.capturing import capture, tokenize_conversations
    from personas.config import CaptureConfig
    from personas.models import load_model

    handle = load_model(f"personas-test/tiny-{family}")
    assert handle.backend == "bridge"
    [tok] = tokenize_conversations(handle, [PROMPT], [RESPONSE], CaptureConfig())
    assert tok.start == HAND_PREFIX[family] and tok.n_response == 8
    assert handle.tokenizer.decode(tok.input_ids[tok.start:tok.end]) == RESPONSE
    first = {"llama": "<|begin_of_text|>", "gemma2": "<bos>", "qwen2": "<|im_start|>"}[family]  # Qwen2 has no BOS
    assert handle.tokenizer.convert_ids_to_tokens(tok.input_ids[:2]).count(first) == 1  # no second BOS
    cap = capture(handle, [PROMPT, "hi"], [RESPONSE, "save a little"], hooks="blocks.3.hook_resid_post",
                  progress=False)
    assert cap.n_tokens.tolist() == [8, 3] and cap.pooled["blocks.3.hook_resid_post"].shape == (2, 64)


def test_detect_on_a_tiny_qwen_with_the_andyrdt_release_conversion(offline_hub, tmp_path, capsys):
    code, out, err = _run(capsys, "detect", "--train", offline_hub["data"], "--holdout-by", "group", "--model",
                          "personas-test/tiny-qwen2", "--sae", "qwen2.5-7b-instruct-andyrdt:resid_post_layer_3_trainer_1",
                          "--k", "3", "--selection", "rank", "--out", tmp_path / "detect")
    assert code == 0, err
    ev = json.loads((tmp_path / "detect" / "eval.json").read_text())
    assert ev["hook"] == "blocks.3.hook_resid_post"  # from the dictionary_learning config's layer
    assert ev["sae_info"]["release"] == "qwen2.5-7b-instruct-andyrdt"
    assert ev["sae_info"]["architecture"] == "jumprelu" and ev["sae_info"]["d_sae"] == 256  # BatchTopK -> jumprelu


@pytest.mark.parametrize("finetune", ["full_ft", "lora"])
def test_diff_base_against_a_finetune_folder_and_a_peft_lora_adapter(offline_hub, tmp_path, capsys, finetune):
    code, out, err = _run(capsys, "diff", "--base", "personas-test/tiny-llama", "--finetuned", offline_hub[finetune],
                          "--prompts", offline_hub["data"], "--sae",
                          "llama-3.1-8b-instruct-andyrdt:resid_post_layer_3_trainer_1", "--out", tmp_path / "diff")
    assert code == 0, err
    table = pd.read_csv(tmp_path / "diff" / "diff.csv")
    assert len(table) == 256 and table["mean_diff"].abs().max() > 0  # the fine-tune reads differently
    manifest = json.loads((tmp_path / "diff" / "manifest.json").read_text())
    assert manifest["hook"] == "blocks.3.hook_resid_post"


def test_lora_merge_adds_scale_b_a_to_the_adapted_weights(offline_hub):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from personas.models.peft import merge_lora, read_lora

    adapter = read_lora(offline_hub["lora"])
    assert adapter.base_model == "personas-test/tiny-llama" and adapter.scale == 8.0
    model = AutoModelForCausalLM.from_pretrained(str(offline_hub["base"]))
    before = model.model.layers[2].self_attn.v_proj.weight.detach().clone()
    assert merge_lora(model, adapter) == 2 * 4  # q_proj and v_proj of 4 layers
    raw = load_file(str(offline_hub["lora"] / "adapter_model.safetensors"))
    key = "base_model.model.model.layers.2.self_attn.v_proj.lora_"
    expected = before + 8.0 * raw[key + "B.weight"] @ raw[key + "A.weight"]
    torch.testing.assert_close(model.model.layers[2].self_attn.v_proj.weight, expected)


def test_unsupported_adapters_are_refused_with_how_to_merge(tmp_path):
    from personas.errors import ModelLoadError
    from personas.models.peft import read_lora

    (tmp_path / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "base_model_name_or_path": "x", "r": 1, "lora_alpha": 2, "use_dora": True}))
    with pytest.raises(ModelLoadError, match="use_dora.*merge_and_unload"):
        read_lora(tmp_path)


def test_missing_model_and_missing_sae_offline_are_one_line_errors(offline_hub, tmp_path, capsys):
    data = offline_hub["data"]
    code, out, err = _run(capsys, "rank", data, "--model", "personas-test/not-in-the-cache", "--sae", "none",
                          "--out", tmp_path / "a")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "'personas-test/not-in-the-cache'" in err and "offline mode (HF_HUB_OFFLINE=1)" in err
    # in the registry, not in the cache
    code, out, err = _run(capsys, "rank", data, "--model", "gpt2", "--sae", "gpt2-small-res-jb:blocks.3.hook_resid_pre",
                          "--out", tmp_path / "b")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "SAE 'gpt2-small-res-jb:blocks.3.hook_resid_pre'" in err and "offline mode" in err


#: The README recipes' models: their public config.json values (no weights), the SAE each recipe uses, its width.
RECIPES = {
    "qwen": ("Qwen/Qwen2.5-7B-Instruct", "qwen2.5-7b-instruct-andyrdt:resid_post_layer_15_trainer_1",
             "andyrdt/saes-qwen2.5-7b-instruct", 15, 7.62e9,
             {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 3584,
              "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
              "num_key_value_heads": 4, "vocab_size": 152064, "max_position_embeddings": 32768,
              "tie_word_embeddings": False}),
    "llama": ("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1-8b-instruct-andyrdt:resid_post_layer_15_trainer_1",
              "andyrdt/saes-llama-3.1-8b-instruct", 15, 8.03e9,
              {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
               "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
               "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 131072,
               "tie_word_embeddings": False}),
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_readme_recipe_names_resolve_without_weights(offline_hub, tmp_path, recipe):
    """The registry entry, its conversion and hook, the model's official TransformerLens name and architecture,
    and the dry run's figures at bfloat16: a renamed release, SAE id or hook breaks this test."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    from personas.config import CaptureConfig
    from personas.models.loading import _official_name
    from personas.plan import plan_job

    import hub_fixtures as th

    model, sae, repo, layer, n_params, config = RECIPES[recipe]
    release, sae_id = sae.split(":")
    entry = get_pretrained_saes_directory()[release]
    assert entry.repo_id == repo and entry.conversion_func == "dictionary_learning_1"
    assert entry.saes_map[sae_id] == f"resid_post_layer_{layer}/trainer_1"
    assert _official_name(model) == model  # loads with HookedTransformer, as the SAEs were trained
    (tmp_path / "config.json").write_text(json.dumps(config))
    th.put_in_cache(offline_hub["cache"], model, {"config.json": tmp_path / "config.json"})
    th.save_dictionary_learning_sae(offline_hub["cache"], repo, f"resid_post_layer_{layer}/trainer_1", lm_name=model,
                                    layer=layer, d_in=config["hidden_size"], work=tmp_path)
    plan = plan_job(CaptureConfig(model=model, dtype="bfloat16", batch_size=16, max_length=512), sae)
    assert plan.hooks == [f"blocks.{layer}.hook_resid_post"] and plan.sae["d_in"] == plan.d_model
    assert plan.n_params == pytest.approx(n_params, rel=0.01) and not plan.notes[1:]


def test_readme_gemma_scope_recipe_resolves_without_weights():
    """Recipe 3: the Gemma Scope registry entry, the config sae-lens's converter derives from its path (no download),
    and the -it model's official TransformerLens name: a renamed entry, width or hook breaks this test."""
    from sae_lens.loading.pretrained_sae_loaders import get_gemma_2_config_from_hf
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    from personas.models.loading import _official_name

    entry = get_pretrained_saes_directory()["gemma-scope-2b-pt-res-canonical"]
    assert entry.repo_id == "google/gemma-scope-2b-pt-res" and entry.model == "gemma-2-2b"
    assert entry.conversion_func == "gemma_2"
    folder = entry.saes_map["layer_12/width_16k/canonical"]
    cfg = get_gemma_2_config_from_hf(entry.repo_id, folder, device="cpu")
    assert (cfg["hook_name"], cfg["d_in"], cfg["d_sae"]) == ("blocks.12.hook_resid_post", 2304, 16384)
    assert cfg["model_name"] == "gemma-2-2b"  # trained on the base model: the recipe passes --allow-model-mismatch
    assert _official_name("gemma-2-2b-it") == "google/gemma-2-2b-it"


def test_bridge_run_hooks_reads_what_run_with_cache_reads_stops_early_and_keeps_user_hooks(offline_hub):
    import torch

    from personas.models import load_model

    handle = load_model("personas-test/tiny-llama")
    bridge = handle.model
    ids = torch.tensor([[1, 5, 9, 13, 17, 21], [1, 6, 10, 14, 0, 0]])
    attn = (ids != 0).long()
    hooks = ["blocks.2.hook_resid_post", "blocks.0.hook_resid_post"]
    got = handle.run_hooks(ids, attn, hooks)
    with torch.no_grad():
        _, cache = bridge.run_with_cache(ids, attention_mask=attn, names_filter=hooks, stop_at_layer=3)
    for name in hooks:
        assert torch.equal(got[name], cache[name]), name

    fired = []
    later = bridge.get_hook_point("blocks.3.hook_resid_post")
    later.add_hook(lambda tensor, hook: fired.append(tensor.shape))  # a user's hook, no context level
    handle.run_hooks(ids, attn, hooks)
    assert fired == []  # the pass ended after block 2
    assert all(len(bridge.get_hook_point(h).fwd_hooks) == 0 for h in hooks)  # ours are gone
    with torch.no_grad():
        bridge.forward(ids, attention_mask=attn)
    assert len(fired) == 1  # the user's hook is still there
    later.remove_hooks("fwd")
