"""`rank --cache` as a first-class run: length columns, top-activating examples from cached per-token codes, and
capture options it would ignore refused."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from personas.cache.build import CacheConfig, build_cache
from personas.config import CacheRankConfig, CaptureConfig
from personas.jobs.rank import rank_from_cache
from personas.report.examples import load_examples, top_examples

from conftest import TOY_HOOK, TRIGGERS


@pytest.fixture(scope="module")
def token_cache(tmp_path_factory, toy_model, planted_sae, planted_data):
    return build_cache(pd.DataFrame(planted_data), tmp_path_factory.mktemp("rank") / "cache", hooks=[TOY_HOOK],
                       sae=planted_sae, model=toy_model, cache=CacheConfig(shard_size=16),
                       capture=CaptureConfig(batch_size=8), progress=False)


def test_length_columns_match_independent_oracles(token_cache, tmp_path):
    from sklearn.metrics import roc_auc_score

    ranking, manifest = rank_from_cache(token_cache, out=tmp_path / "run")
    length = token_cache.index["n_tokens"].to_numpy(float)
    labels = token_cache.labels
    assert manifest["ranking"]["length_auroc"] == pytest.approx(roc_auc_score(labels, length), abs=1e-12)
    dense = token_cache.load_features().toarray()
    expected = np.zeros(dense.shape[1])
    for j in range(dense.shape[1]):
        if dense[:, j].std() > 0:
            expected[j] = np.corrcoef(dense[:, j], length)[0, 1]
    np.testing.assert_allclose(ranking["length_corr"], expected[ranking["feature"].to_numpy()], atol=1e-9)
    written = pd.read_csv(tmp_path / "run" / "ranking.csv")
    np.testing.assert_allclose(written["length_corr"], ranking["length_corr"], atol=1e-12)
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["ranking"]["stratified_by_group"]
    binned, _ = rank_from_cache(token_cache, options=CacheRankConfig(exact=False))
    by_feature = binned.set_index("feature")["length_corr"]
    np.testing.assert_allclose(by_feature.loc[ranking["feature"]], ranking["length_corr"], atol=1e-12)


class _WithoutTexts:
    """Responses as a cache knows them: no texts, so examples show the decoded tokens (not the original text)."""

    def __init__(self, responses):
        self.labels, self.ids, self.prompts = responses.labels, responses.ids, responses.prompts
        self.groups, self.has_groups = responses.groups, responses.has_groups

    def __len__(self):
        return len(self.labels)


def test_examples_from_the_cache_equal_top_examples_on_the_captured_codes(token_cache, tmp_path, toy_model,
                                                                           toy_tokenizer, planted_sae, planted_data):
    from personas.capturing import capture
    from personas.data.responses import load_responses

    ranking, manifest = rank_from_cache(token_cache, out=tmp_path / "run", examples=True, tokenizer=toy_tokenizer)
    found = load_examples(tmp_path / "run")
    top = [int(f) for f in ranking["feature"].head(10)]
    assert list(found) == top == manifest["files"]["examples.json"]["features"]
    assert top[0] == 7  # the planted latent, whose examples are the trigger words
    assert {e.tokens[e.position].strip() for e in found[7].examples} <= set(TRIGGERS)

    responses = load_responses(pd.DataFrame(planted_data))
    ref_capture = capture(toy_model, responses.prompts, responses.texts, hooks=[TOY_HOOK],
                          config=CaptureConfig(batch_size=8), sae=planted_sae, keep_tokens=True, progress=False)
    expected = top_examples(ref_capture, top, tokenizer=toy_tokenizer, responses=_WithoutTexts(responses), k=5)
    for f in top:
        got, want = found[f].to_dict(), expected[f].to_dict()
        for example in want["examples"]:
            example["prompt"] = None  # prompts are not cached
        assert got == want, f


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory, toy_tokenizer):
    from personas.testing import save_toy_hf_model

    return save_toy_hf_model(tmp_path_factory.mktemp("hf") / "tiny", toy_tokenizer, seed=3)


@pytest.fixture(scope="module")
def folder_cache(tmp_path_factory, hf_folder, planted_data):
    from personas.models import load_model
    from personas.testing import plant_sae

    hook = "blocks.0.hook_resid_post"
    folder = hf_folder
    sae = plant_sae(load_model(str(folder)), hook, TRIGGERS, planted_data["response"][::3], d_sae=48, feature=5,
                    seed=0)
    return build_cache(pd.DataFrame(planted_data), tmp_path_factory.mktemp("c") / "cache", hooks=[hook], sae=sae,
                       capture=CaptureConfig(model=str(folder), batch_size=8), cache=CacheConfig(shard_size=20),
                       progress=False)


def _forbid_model_loading(monkeypatch) -> list[str]:
    """Replace `load_model` in every personas module that holds it (each caller imported its own reference), and
    return their names: patching `personas.models` alone would stop none of them."""
    import sys

    import personas.jobs.detect  # noqa: F401  (the holders, imported so that they are patched too)
    import personas.jobs.diff  # noqa: F401
    import personas.jobs.rank  # noqa: F401
    import personas.models

    original = personas.models.load_model

    def no_model(*args, **kwargs):
        raise AssertionError("rank --cache must not load the model")

    patched = []
    for name, module in list(sys.modules.items()):
        if name.startswith("personas") and getattr(module, "load_model", None) is original:
            monkeypatch.setattr(module, "load_model", no_model)
            patched.append(name)
    return patched


def test_cli_rank_cache_report_loads_only_the_tokenizer(folder_cache, hf_folder, tmp_path, capsys, monkeypatch,
                                                         planted_data):
    from personas.cli.main import main

    patched = _forbid_model_loading(monkeypatch)
    assert {"personas.models", "personas.saes.site", "personas.cache.engines.base", "personas.detect.estimators",
            "personas.jobs.diff"} <= set(patched)
    # the guard fires: ranking the same rows without the cache has to load the model, and is stopped
    data = tmp_path / "rows.jsonl"
    pd.DataFrame(planted_data).to_json(data, orient="records", lines=True)
    with pytest.raises(AssertionError, match="must not load the model"):
        main(["rank", str(data), "--model", str(hf_folder), "--hook", folder_cache.hooks[0], "--sae", "none",
              "--out", str(tmp_path / "uncached"), "--quiet"])
    out = tmp_path / "run"
    assert main(["rank", "--cache", str(folder_cache.path), "--report", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "length alone: AUROC" in printed and "report.html" in printed
    assert {"ranking.csv", "manifest.json", "examples.json", "report.html"} <= {p.name for p in out.iterdir()}
    assert "length_corr" in pd.read_csv(out / "ranking.csv").columns
    examples = load_examples(out)
    assert int(next(iter(examples))) == 5 and examples[5].examples  # the planted latent, with its examples
    report = (out / "report.html").read_text()
    assert "feature 5" in report and 'id="card-5"' in report  # a card, from the cache's codes
    assert "decoder is not at hand" in report  # the SAE was in memory: no decoder to reload, and the card says so


@pytest.mark.parametrize("options,named", [
    (["--model", "gpt2", "--sae", "none"], "--model, --sae given with --cache"),
    (["--pool", "max", "--batch-size", "4"], "--pool, --batch-size given with --cache"),
    (["--label-column", "y", "--misaligned-below", "20"], "--label-column, --misaligned-below given with --cache"),
])
def test_cli_rank_cache_refuses_capture_options(folder_cache, tmp_path, capsys, options, named):
    from personas.cli.main import main

    argv = ["rank", "--cache", str(folder_cache.path), "--out", str(tmp_path / "r"), *options]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err and err.count("\n") == 1
    assert main(["rank", "--cache", str(folder_cache.path), "--out", str(tmp_path / "r"),
                 "--hook", folder_cache.hooks[0], "--quiet"]) == 0


def test_confound_columns_from_the_cache_equal_personas_confounds_on_its_codes(token_cache, toy_tokenizer):
    import scipy.sparse

    from personas.scoring.confounds import confound_kind, confound_table, punctuation_token_ids

    ranking, manifest = rank_from_cache(token_cache, tokenizer=toy_tokenizer)
    codes, ids, lengths = [], [], []
    for shard in token_cache.iter_shards(want=("tokens",)):
        codes.append(shard.token_codes.codes)
        ids.append(shard.token_codes.token_ids)
        lengths.append(np.diff(shard.token_codes.offsets))
    offsets = np.r_[0, np.cumsum(np.concatenate(lengths))]
    table = confound_table(scipy.sparse.vstack(codes, format="csr"), offsets, np.concatenate(ids),
                           pooled=token_cache.load_features(), punctuation_ids=punctuation_token_ids(toy_tokenizer))
    rows = ranking["feature"].to_numpy()
    for name in ("length_corr", "punct_corr", "top_token_share", "top_token"):
        np.testing.assert_allclose(ranking[name].to_numpy(float), table[name][rows].astype(float), atol=1e-9)
    recorded = manifest["ranking"]["confounds"]
    expected = confound_kind({k: table[k][rows] for k in ("length_corr", "punct_corr", "top_token_share")},
                             max_corr=recorded["max_corr"], max_token_share=recorded["max_token_share"])
    assert ranking["kind"].tolist() == list(expected) and (expected != "").any()
