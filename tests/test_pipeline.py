"""The rank job end to end on tiny models: the planted latent comes first; files, CLI and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import personas
from personas.cli.main import main
from personas.config import CaptureConfig, SAEConfig
from personas.errors import ModelLoadError, PersonasError

from conftest import TOY_HOOK


def test_planted_latent_is_ranked_first(toy_model, planted_sae, planted_data, tmp_path):
    result = personas.rank(
        pd.DataFrame(planted_data), model=toy_model, sae=planted_sae, capture=CaptureConfig(hook=TOY_HOOK),
        out=tmp_path, progress=False,
    )
    top = result.ranking.iloc[0]
    assert int(top["feature"]) == 7
    assert top["auroc"] > 0.95 and top["q_value"] < 1e-6
    assert result.features.shape == (80, 64)
    # most random latents must not be significant: the planted one is found, not everything
    assert result.ranking["significant"].sum() < 32


def test_rank_writes_ranking_and_manifest(toy_model, planted_sae, planted_data, tmp_path):
    result = personas.rank(pd.DataFrame(planted_data), model=toy_model, sae=planted_sae, out=tmp_path, progress=False)
    ranking = pd.read_csv(tmp_path / "ranking.csv")
    for column in ("feature", "auroc", "mean_diff", "cohens_d", "p_value", "q_value"):
        assert column in ranking
    assert len(ranking) == 64 and ranking["feature"].is_unique
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["hook"] == TOY_HOOK and manifest["pooling"] == "mean"
    assert manifest["data"]["n_misaligned"] == 40 and manifest["data"]["n_aligned"] == 40
    assert len(manifest["data"]["dataset_hash"]) == 64
    assert manifest["sae"]["d_sae"] == 64 and manifest["sae"]["hook_name"] == TOY_HOOK
    assert manifest["versions"]["sae-lens"] and manifest["versions"]["transformer-lens"]
    assert manifest["model"]["model"] == toy_model.model_id
    # the length confound check, against oracles on the captured rows (as the cache path's test does)
    from sklearn.metrics import roc_auc_score

    length = result.capture.n_tokens.astype(float)
    labels = np.asarray(planted_data["label"])
    assert manifest["ranking"]["length_auroc"] == pytest.approx(roc_auc_score(labels, length), abs=1e-12)
    dense = np.asarray(result.features.todense()) if hasattr(result.features, "todense") else np.asarray(result.features)
    expected = np.array([np.corrcoef(dense[:, j], length)[0, 1] if dense[:, j].std() > 0 else 0.0
                         for j in range(dense.shape[1])])
    assert np.abs(expected).max() > 0.1  # some latent does track length here: the column is not all zeros
    np.testing.assert_allclose(ranking["length_corr"], expected[ranking["feature"].to_numpy()], atol=1e-6)


def test_raw_activations_without_sae(toy_model, planted_data):
    result = personas.rank(pd.DataFrame(planted_data), model=toy_model, sae="none",
                           capture=CaptureConfig(hook=TOY_HOOK), progress=False)
    assert len(result.ranking) == toy_model.d_model and result.manifest["sae"] is None


def test_local_folder_loads_through_the_bridge(tmp_path, toy_tokenizer, planted_data):
    from personas.testing import save_toy_hf_model

    folder = save_toy_hf_model(tmp_path / "tiny-gpt2", toy_tokenizer, seed=1)
    handle = personas.load_model(str(folder))
    assert handle.backend == "bridge" and not handle.is_encoder
    result = personas.rank(pd.DataFrame(planted_data).iloc[::4], model=handle, sae="none",
                           capture=CaptureConfig(hook="blocks.1.hook_resid_post"), progress=False)
    assert result.manifest["capture"]["stop_at_layer"] is None  # the last block: nothing to skip
    assert len(result.ranking) == handle.d_model


def test_hub_model_offline_fails_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="offline mode.*minilm"):
        personas.load_model("gpt2")


def test_unknown_sae_release_lists_choices():
    with pytest.raises(PersonasError, match="gpt2-small-res-jb"):
        personas.load_sae("gpt2-small-res-jbx:blocks.8.hook_resid_pre")
    with pytest.raises(PersonasError, match="valid ids include"):
        personas.load_sae("gpt2-small-res-jb:blocks.99.hook_resid_pre")


def test_a_shipped_sae_loads_by_its_folder_name_and_a_local_folder_wins(planted_sae, tmp_path, monkeypatch):
    from personas.saes import check_sae_spec, recorded_sae_spec, shipped_saes

    planted_sae.save_model(str(tmp_path / "data" / "saes" / "old-default"))
    (tmp_path / "data" / "saes" / "not-an-sae").mkdir()
    monkeypatch.setenv("PERSONAS_DATA", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    assert list(shipped_saes()) == ["old-default"]
    # recorded latents are read with the shipped SAE they name when the spec is "default", and only then
    assert recorded_sae_spec({"shipped": "old-default"}, "default") == "old-default"
    assert recorded_sae_spec({"shipped": "old-default"}, "my-folder") == "my-folder"
    assert recorded_sae_spec({"shipped": "gone-since"}, "default") == "default"
    assert recorded_sae_spec(None, "default") == "default"
    loaded = personas.load_sae("old-default")
    assert np.allclose(loaded.W_dec.detach().numpy(), planted_sae.W_dec.detach().numpy())
    with pytest.raises(PersonasError, match="Shipped SAEs: old-default"):
        personas.load_sae("old-defaul")
    planted_sae.save_model(str(tmp_path / "old-default"))  # a folder of that name in the working directory
    assert check_sae_spec("old-default") == Path("old-default")


def test_sae_folder_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="cfg.json"):
        personas.load_sae(str(tmp_path))


def test_cli_reports_bad_data_without_a_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "a"}\n')
    assert main(["rank", str(bad), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "error" in err and "label" in err and "Traceback" not in err


def test_sae_config_round_trip_from_cli_options():
    from personas.cli.main import build_parser
    from personas.cli.options import config_from_args

    args = build_parser().parse_args(["rank", "d.jsonl", "--sae", "none", "--pool", "max", "--batch-size", "4"])
    assert config_from_args(SAEConfig, args).sae == "none"
    capture_cfg = config_from_args(CaptureConfig, args)
    assert capture_cfg.pool == "max" and capture_cfg.batch_size == 4 and capture_cfg.model == "smollm2"


def test_rank_from_cache_equals_rank_from_data(tmp_path, toy_tokenizer, planted_data, capsys):
    from personas.testing import save_toy_hf_model

    folder = save_toy_hf_model(tmp_path / "tiny", toy_tokenizer, seed=3)
    data = tmp_path / "data.jsonl"
    pd.DataFrame(planted_data).iloc[::2].to_json(data, orient="records", lines=True)
    common = ["--model", str(folder), "--sae", "none", "--quiet"]
    hook = ["--hook", "blocks.0.hook_resid_post"]
    assert main(["cache", str(data), "--out", str(tmp_path / "cache"), *hook, "--shard-size", "7", *common]) == 0
    assert main(["rank", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "from_cache"), "--quiet"]) == 0
    assert main(["rank", str(data), "--out", str(tmp_path / "direct"), *hook, *common]) == 0
    from_cache = pd.read_csv(tmp_path / "from_cache" / "ranking.csv")
    loaded = personas.load_run(tmp_path / "from_cache")  # a cache run's folder reads back too
    assert loaded["feature"].tolist() == from_cache["feature"].tolist() and loaded.meta["n_features"] == 64
    direct = pd.read_csv(tmp_path / "direct" / "ranking.csv")
    assert from_cache["feature"].tolist() == direct["feature"].tolist()
    pd.testing.assert_series_equal(from_cache["auroc"], direct["auroc"], rtol=1e-6)
    pd.testing.assert_series_equal(from_cache["q_value"], direct["q_value"], rtol=1e-5)
    manifest = json.loads((tmp_path / "from_cache" / "manifest.json").read_text())
    assert manifest["source"]["cache"].endswith("cache") and manifest["hook"] == "blocks.0.hook_resid_post"
    capsys.readouterr()
    assert main(["rank", str(data), "--cache", str(tmp_path / "cache")]) == 2
    assert "give one of them" in capsys.readouterr().err


def test_groups_without_both_classes_fall_back_to_an_unstratified_ranking(toy_model, planted_sae, planted_data):
    frame = pd.DataFrame(planted_data)
    frame["group"] = [f"only-{label}-{i}" for i, label in enumerate(frame["label"])]  # one response per question
    result = personas.rank(frame, model=toy_model, sae=planted_sae, progress=False)
    assert result.manifest["ranking"]["stratified_by_group"] is False
    assert "group_auroc" not in result.ranking.columns and int(result.ranking.iloc[0]["feature"]) == 7


@pytest.mark.parametrize("command", ["rank", "train-sae", "cache", "cache-info", "detect", "steer", "diff", "report",
                                     "screen", "sweep"])
def test_every_command_has_working_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0 and "usage: personas" in capsys.readouterr().out
