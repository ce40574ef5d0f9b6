"""The Python API as a notebook user meets it: sae=None, one-line result reprs, run folders read back with
`load_run`, loaded models keeping their identity, progress bars, and quiet third-party loading."""

from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import pandas as pd
import pytest

import personas
from personas.config import CaptureConfig, DetectorConfig
from personas.errors import DataError, PersonasError, SiteMismatchError
from personas.jobs.detect import fit_detector
from personas.jobs.diff import diff_models
from personas.jobs.rank import RANKING_PARQUET, load_run, rank
from personas.logs import quiet_third_party
from personas.models import as_model_handle
from personas.models.offline import MINILM_ID
from personas.scoring.ranking import Ranking

from conftest import TOY_HOOK, TRIGGERS


@pytest.fixture(scope="module")
def ranked(toy_model, planted_sae, planted_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = rank(pd.DataFrame(planted_data), model=toy_model, sae=planted_sae, capture=CaptureConfig(hook=TOY_HOOK),
                  out=out, progress=False)
    return result, out


# ------------------------------------------------------------------------------------------------ sae=None


def test_sae_none_means_no_sae(toy_model, planted_data):
    frame = pd.DataFrame(planted_data)
    result = rank(frame, model=toy_model, sae=None, capture=CaptureConfig(hook=TOY_HOOK), progress=False)
    assert result.manifest["sae"] is None and len(result.ranking) == toy_model.d_model
    fitted = fit_detector(frame, config=DetectorConfig(k=3, holdout_by="group", test_fraction=0.5), sae=None,
                          capture=CaptureConfig(hook=TOY_HOOK), model=toy_model, progress=False)
    assert fitted.evaluation["sae_info"] is None and fitted.detector.n_features_in_ == toy_model.d_model
    # refused before any model is loaded: these model names do not exist
    with pytest.raises(PersonasError, match="needs an SAE"):
        diff_models("no-such-base", "no-such-finetune", ["a prompt"], None)


# ------------------------------------------------------------------------------------------------ reprs


def test_result_reprs_are_one_line_with_the_key_numbers(ranked, toy_model, planted_sae, planted_data):
    result, out = ranked
    text = repr(result)
    assert "\n" not in text and len(text) < 400
    assert text.startswith("RankResult(80 responses") and "top: 7 (AUROC" in text and str(out) in text
    assert f"{int(result.ranking['significant'].sum())} significant" in text
    capture_text = repr(result.capture)
    assert "\n" not in capture_text and "80 responses" in capture_text and "64 latents" in capture_text
    fitted = fit_detector(pd.DataFrame(planted_data), config=DetectorConfig(k=3, holdout_by="group", test_fraction=0.5),
                          capture=CaptureConfig(hook=TOY_HOOK), sae=planted_sae, model=toy_model, progress=False)
    detect_text = repr(fitted)
    auroc = fitted.evaluation["auroc"]
    assert "\n" not in detect_text and f"held-out AUROC {auroc:.3f}" in detect_text and "features [7," in detect_text


# ------------------------------------------------------------------------------------------------ load_run


def test_load_run_reads_the_ranking_with_its_metadata(ranked):
    result, out = ranked
    assert (out / RANKING_PARQUET).is_file() and (out / "ranking.csv").is_file()
    loaded = personas.load_run(out)
    assert isinstance(loaded, Ranking)
    pd.testing.assert_frame_equal(pd.DataFrame(loaded), pd.DataFrame(result.ranking))  # Parquet keeps exact values
    manifest = loaded.attrs["manifest"]  # the metadata is the frame's attrs: the ranking's, plus the run's manifest
    assert {k: v for k, v in loaded.meta.items() if k != "manifest"} == result.ranking.meta
    assert loaded.n_pos == 40 and loaded.key == "auroc" and loaded.meta is loaded.attrs
    assert manifest["hook"] == TOY_HOOK and manifest["sae"]["d_sae"] == 64
    assert loaded.significant()["feature"].tolist() == result.ranking.significant()["feature"].tolist()


def test_load_run_reads_folders_written_before_parquet(ranked, tmp_path):
    result, out = ranked
    old = tmp_path / "old"
    old.mkdir()
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["ranking"]["meta"], manifest["files"][RANKING_PARQUET]
    (old / "manifest.json").write_text(json.dumps(manifest))
    (old / "ranking.csv").write_bytes((out / "ranking.csv").read_bytes())
    loaded = load_run(old)
    assert loaded["feature"].tolist() == result.ranking["feature"].tolist()
    np.testing.assert_allclose(loaded["auroc"], result.ranking["auroc"], rtol=1e-12)
    assert loaded.meta["n_pos"] == 40 and loaded.meta["n_neg"] == 40 and loaded.meta["n_features"] == 64


def test_load_run_refuses_what_is_not_an_intact_rank_run(ranked, tmp_path):
    _, out = ranked
    with pytest.raises(DataError, match="not a personas rank run"):
        load_run(tmp_path)
    changed = tmp_path / "changed"
    changed.mkdir()
    for name in ("manifest.json", "ranking.csv"):
        (changed / name).write_bytes((out / name).read_bytes())
    (changed / "ranking.csv").write_text((out / "ranking.csv").read_text().replace("\n7,", "\n8,", 1))
    with pytest.raises(DataError, match="checksum"):
        load_run(changed)
    (changed / "manifest.json").write_text(json.dumps({"kind": "personas.detect"}))
    with pytest.raises(DataError, match="personas.detect"):
        load_run(changed)


# ------------------------------------------------------------------------------------------------ model identity


def test_a_bridge_loaded_by_hand_keeps_its_identity(tmp_path, toy_tokenizer, planted_data):
    from transformer_lens.model_bridge import TransformerBridge

    from personas.testing import plant_sae, save_toy_hf_model

    folder = save_toy_hf_model(tmp_path / "tiny-gpt2", toy_tokenizer, seed=2)
    handle = personas.load_model(str(folder))
    hook = "blocks.0.hook_resid_pre"
    sae = plant_sae(handle, hook, TRIGGERS, planted_data["response"][::3], d_sae=32, feature=5, seed=0)
    alias = tmp_path / "alias"  # the same folder under another name, as a user may point at it
    alias.symlink_to(folder, target_is_directory=True)
    with quiet_third_party():
        bridge = TransformerBridge.boot_transformers(str(alias), device="cpu")
    assert as_model_handle(bridge).model_id == handle.model_id == str(folder.resolve())
    result = rank(pd.DataFrame(planted_data), model=bridge, sae=sae, progress=False)
    assert result.manifest["model"]["model"] == handle.model_id and int(result.ranking["feature"].iloc[0]) == 5
    with pytest.raises(SiteMismatchError, match="trained on model"):  # the check still bites on another identity
        rank(pd.DataFrame(planted_data), model=as_model_handle(bridge, model_id="another-model"), sae=sae,
             progress=False)


def test_the_default_model_loaded_as_a_bridge_is_the_default(minilm):
    assert as_model_handle(minilm.model).model_id == MINILM_ID  # its folder sits inside the weights package


# ------------------------------------------------------------------------------------------------ progress, chatter


def test_progress_bars_show_when_asked_even_without_a_terminal(toy_model, planted_data, capsys):
    frame = pd.DataFrame(planted_data)
    rank(frame, model=toy_model, sae=None, capture=CaptureConfig(hook=TOY_HOOK), progress=True)
    assert "capture" in capsys.readouterr().err  # stderr is not a TTY here, as in a notebook kernel
    rank(frame, model=toy_model, sae=None, capture=CaptureConfig(hook=TOY_HOOK), progress=False)
    assert "capture" not in capsys.readouterr().err


def test_models_load_without_third_party_bars(tmp_path, toy_tokenizer, planted_data, capsys):
    from personas.testing import save_toy_hf_model

    folder = save_toy_hf_model(tmp_path / "tiny", toy_tokenizer, seed=4)
    capsys.readouterr()
    rank(pd.DataFrame(planted_data).iloc[::4], capture=CaptureConfig(model=str(folder), hook=TOY_HOOK), sae=None,
         progress=False)
    assert capsys.readouterr().err == ""


def test_quiet_third_party_hides_their_chatter_and_keeps_ours():
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_third_party():
            assert not hf_logging.is_progress_bar_enabled() and hf_logging.get_verbosity() == hf_logging.ERROR
            warnings.warn("HookedTransformer is deprecated and will be removed in 4.0.", DeprecationWarning, stacklevel=1)
            warnings.warn("The 'utils' module has been deprecated.", DeprecationWarning, stacklevel=1)
            warnings.warn("response length alone separates the classes", UserWarning, stacklevel=1)
        warnings.warn("HookedTransformer is deprecated and will be removed in 4.0.", DeprecationWarning, stacklevel=1)
    assert [str(w.message)[:18] for w in caught] == ["response length al", "HookedTransformer "]
    assert hf_logging.get_verbosity() == verbosity and hf_logging.is_progress_bar_enabled() == bars
    logger = logging.getLogger("sae_lens")
    level = logger.level
    with pytest.raises(RuntimeError), quiet_third_party():
        assert logger.getEffectiveLevel() >= logging.WARNING
        raise RuntimeError("restored after an exception too")
    assert logger.level == level and hf_logging.get_verbosity() == verbosity
