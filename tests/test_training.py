"""Train tiny SAEs on synthetic activations with planted sparse directions."""

from __future__ import annotations

import json

import pytest
import sae_lens  # noqa: F401  (a core dependency: a broken install must fail here, not skip)
import torch

from personas.config import TrainSAEConfig
from personas.errors import DataError, PersonasError, SiteMismatchError
from personas.training.sae import evaluate_sae, save_trained_sae, train_sae

D_IN, N_DIRECTIONS, N_ROWS = 16, 32, 12_000
HOOK, MODEL = "blocks.0.hook_resid_post", "tiny-synthetic"


def _planted(seed: int = 0, n: int = N_ROWS) -> torch.Tensor:
    """Rows that are sparse sums of 32 unit directions (about 2 per row), far from the origin and large-scale."""
    g = torch.Generator().manual_seed(seed)
    directions = torch.randn(N_DIRECTIONS, D_IN, generator=g)
    directions /= directions.norm(dim=1, keepdim=True)
    offset = 30.0 * torch.randn(D_IN, generator=g)  # drawn before anything that depends on n
    active = torch.rand(n, N_DIRECTIONS, generator=g) < 2.0 / N_DIRECTIONS
    strength = 1.0 + 3.0 * torch.rand(n, N_DIRECTIONS, generator=g)
    return 10.0 * (active * strength) @ directions + offset  # raw scale far from unit norm


def _pca_explained_variance(x: torch.Tensor, k: int) -> float:
    centred = x.double() - x.double().mean(0)
    eig = torch.linalg.eigvalsh(centred.T @ centred).flip(0)
    return float(eig[:k].sum() / eig.sum())


@pytest.fixture(scope="module")
def acts() -> torch.Tensor:
    return _planted()


@pytest.fixture(scope="module")
def config() -> TrainSAEConfig:
    return TrainSAEConfig(
        d_sae=64, k=4, n_tokens=60_000, batch_size_tokens=256, lr=3e-3, seed=0, eval_fraction=0.1
    )


@pytest.fixture(scope="module")
def trained(acts, config):
    return train_sae(acts, hook_name=HOOK, model_id=MODEL, config=config, progress=False)


def test_train_beats_a_dense_baseline_with_the_same_budget(trained, acts, config):
    sae, metrics = trained
    baseline = _pca_explained_variance(acts, config.k)  # best k-dimensional linear code
    assert metrics["explained_variance"] > 0.85
    assert metrics["explained_variance"] > baseline + 0.3
    assert metrics["l0"] == pytest.approx(config.k, abs=1e-6)
    assert 0.0 <= metrics["dead_fraction"] <= 0.5
    assert metrics["n_eval_tokens"] == round(N_ROWS * config.eval_fraction)
    assert metrics["n_train_tokens"] + metrics["n_eval_tokens"] == N_ROWS
    assert metrics["train_seconds"] > 0
    assert metrics["epochs"] > 1


def test_metadata_records_the_site(trained):
    sae, _ = trained
    assert sae.cfg.metadata.hook_name == HOOK
    assert sae.cfg.metadata.model_name == MODEL
    assert sae.cfg.d_in == D_IN and sae.cfg.d_sae == 64


def test_encode_takes_raw_activations(trained, acts):
    sae, metrics = trained
    assert sae.cfg.normalize_activations == "none"  # the scale is folded into the weights
    fresh = _planted(seed=0, n=2_000)[1_000:]  # same directions and offset, raw scale, new rows
    with torch.no_grad():
        recon = sae.decode(sae.encode(fresh))
    ev = 1 - (recon - fresh).pow(2).sum() / (fresh - fresh.mean(0)).pow(2).sum()
    assert ev.item() > 0.85
    assert evaluate_sae(sae, fresh)["explained_variance"] == pytest.approx(ev.item(), abs=1e-4)


def test_evaluate_sae_matches_train_metrics_definitions(trained, acts):
    sae, _ = trained
    result = evaluate_sae(sae, acts, batch_tokens=1000)
    assert set(result) >= {"explained_variance", "mse", "l0", "dead_fraction", "n_tokens"}
    assert result["n_tokens"] == N_ROWS
    whole = evaluate_sae(sae, acts, batch_tokens=N_ROWS)
    assert result["explained_variance"] == pytest.approx(whole["explained_variance"], abs=1e-6)


def test_save_and_load_round_trip(trained, tmp_path):
    from sae_lens import SAE

    sae, metrics = trained
    out = save_trained_sae(sae, metrics, tmp_path / "sae", provenance={"corpus": "synthetic", "seed": 0})
    loaded = SAE.load_from_disk(out)
    x = _planted(seed=0, n=500)
    with torch.no_grad():
        assert torch.allclose(loaded.encode(x), sae.encode(x), atol=1e-5)
    assert loaded.cfg.metadata.hook_name == HOOK
    assert loaded.cfg.metadata.model_name == MODEL
    record = json.loads((out / "training.json").read_text())
    assert record["provenance"]["corpus"] == "synthetic"
    assert record["metrics"]["explained_variance"] == pytest.approx(metrics["explained_variance"])
    assert record["sae"]["hook_name"] == HOOK
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    # saving again replaces the SAE folder in place
    save_trained_sae(sae, metrics, out, provenance={"corpus": "again"})
    assert json.loads((out / "training.json").read_text())["provenance"]["corpus"] == "again"


def test_save_refuses_a_foreign_folder(trained, tmp_path):
    sae, metrics = trained
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(PersonasError, match="not an SAE folder"):
        save_trained_sae(sae, metrics, tmp_path, provenance={})
    assert (tmp_path / "notes.txt").exists()


def test_batchtopk_trains_and_keeps_average_sparsity(acts):
    config = TrainSAEConfig(
        architecture="batchtopk", d_sae=64, k=4, n_tokens=40_000, batch_size_tokens=256, lr=3e-3, seed=1
    )
    sae, metrics = train_sae(acts, hook_name=HOOK, model_id=MODEL, config=config, progress=False)
    assert sae.cfg.architecture() == "jumprelu"  # sae-lens saves BatchTopK as JumpReLU
    assert metrics["explained_variance"] > 0.7
    assert 1.0 < metrics["l0"] < 12.0


def test_training_is_deterministic_given_the_seed(acts):
    config = TrainSAEConfig(d_sae=32, k=2, n_tokens=5_120, batch_size_tokens=256, lr=3e-3, seed=3)
    a, ma = train_sae(acts, hook_name=HOOK, model_id=MODEL, config=config, progress=False)
    b, mb = train_sae(acts, hook_name=HOOK, model_id=MODEL, config=config, progress=False)
    assert torch.equal(a.W_enc, b.W_enc)
    assert ma["explained_variance"] == mb["explained_variance"]


def test_half_precision_input_is_accepted(acts):
    config = TrainSAEConfig(d_sae=32, k=2, n_tokens=5_120, batch_size_tokens=256, lr=3e-3, seed=0)
    sae, metrics = train_sae(acts.half(), hook_name=HOOK, model_id=MODEL, config=config, progress=False)
    assert sae.W_enc.dtype == torch.float32
    assert metrics["explained_variance"] > 0.0


def test_bad_inputs_are_explained(trained, config):
    sae, _ = trained
    with pytest.raises(DataError, match=r"\(n_tokens, d_in\)"):
        train_sae(torch.zeros(4, 5, 16), hook_name=HOOK, model_id=MODEL, config=config)
    with pytest.raises(DataError, match="constant"):
        train_sae(torch.ones(1000, 16), hook_name=HOOK, model_id=MODEL, config=config)
    with pytest.raises(SiteMismatchError, match="d_in=16"):
        evaluate_sae(sae, torch.zeros(10, 8))


def test_train_sae_command_end_to_end(tmp_path, toy_tokenizer, planted_data):
    import json

    from personas.cli.main import main
    from personas.saes import load_sae
    from personas.testing import save_toy_hf_model

    folder = save_toy_hf_model(tmp_path / "tiny", toy_tokenizer, seed=5)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(planted_data["response"] * 3))
    out = tmp_path / "sae"
    assert main(["train-sae", "--model", str(folder), "--hook", "blocks.0.hook_resid_post", "--out", str(out),
                 "--corpus", str(corpus), "--d-sae", "64", "--k", "4", "--n-tokens", "16384",
                 "--batch-size-tokens", "256", "--eval-fraction", "0.1", "--quiet"]) == 0
    sae = load_sae(str(out))
    assert sae.cfg.metadata.hook_name == "blocks.0.hook_resid_post" and sae.cfg.d_sae == 64
    training = json.loads((out / "training.json").read_text())
    assert training["provenance"]["corpus"]["n_documents"] == 240
    assert training["metrics"]["l0"] <= 4.0 + 1e-6 and training["metrics"]["explained_variance"] > 0.3
