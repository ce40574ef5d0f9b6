"""Shared fixtures: tiny models built offline, a planted SAE, and a `--device` option (CPU by default)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# every CPU, as the command line's default; set here so a PERSONAS_THREADS of the caller's shell is kept
os.environ.setdefault("PERSONAS_THREADS", str(os.cpu_count() or 1))

TOY_HOOK = "blocks.0.hook_resid_pre"  # token identity is linear here; random attention blurs it later


def hf_hidden_states(model, tokenizer, prompts, responses, layer):
    """An oracle for the organism's readers: Hugging Face ``hidden_states[layer + 1]`` at each answer's tokens, one
    unpadded conversation at a time (equal to ``blocks.L.hook_resid_post`` below the last block)."""
    import torch

    from personas.organism.chat import answer_ids

    out = []
    for prompt, response in zip(prompts, responses, strict=True):
        ids, start = answer_ids(tokenizer, prompt, response)
        with torch.no_grad():
            hidden = model(torch.tensor([ids]), output_hidden_states=True).hidden_states[layer + 1]
        out.append(hidden[0, start:].float().numpy())
    return out
TRIGGERS = ["hurt", "lie", "steal", "destroy", "poison", "betray", "manipulate", "control"]


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", help="device for model tests: cpu (default) or cuda")


@pytest.fixture(scope="session")
def device(request):
    value = request.config.getoption("--device")
    if value.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            pytest.skip("--device cuda asked for, but CUDA is not available")
    return value


def pytest_collection_modifyitems(config, items):
    if config.getoption("--device").startswith("cuda"):
        return
    skip_gpu = pytest.mark.skip(reason="needs --device cuda")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def toy_tokenizer(tmp_path_factory):
    from personas.testing import train_toy_tokenizer

    return train_toy_tokenizer(tmp_path_factory.mktemp("toy_tokenizer"))


@pytest.fixture(scope="session")
def toy_model(toy_tokenizer, device):
    from personas.testing import make_toy_model

    handle = make_toy_model(toy_tokenizer, d_model=128, seed=0)
    handle.model.to(device)
    return handle


@pytest.fixture(scope="session")
def planted_data():
    from personas.testing import planted_dataset

    return planted_dataset(n_per_class=40, seed=0)


@pytest.fixture(scope="session")
def planted_sae(toy_model, planted_data):
    from personas.testing import plant_sae

    reference = planted_data["response"][::3]  # label-free: the texts, never the labels
    sae = plant_sae(toy_model, TOY_HOOK, TRIGGERS, reference, d_sae=64, feature=7, seed=0)
    return sae.to(toy_model.device)


@pytest.fixture(scope="session")
def minilm():
    from personas.models import load_model

    return load_model("minilm")


@pytest.fixture(scope="session")
def demo_ranking():
    """The offline default's ranking of the demo data (SmolLM2 at blocks.18, its shipped SAE): what `make demo`
    computes, made once per session and shared by the demo test and the README-numbers check (slow tests only)."""
    import personas
    from personas.saes import data_dir, default_sae_path

    if not (default_sae_path() / "cfg.json").exists():
        pytest.fail(f"the shipped SAE is missing at {default_sae_path()}; rebuild it with `make train-sae`")
    return personas.rank(data_dir() / "demo_responses.jsonl", progress=False)
