"""Pooling of per-token codes and confound flags, on planted data against brute-force oracles."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse

from personas.errors import DataError
from personas.scoring.confounds import (
    confound_kind,
    confound_table,
    flag_confounds,
    pool_codes,
    residualize,
    response_covariates,
)


def _tokens(seed: int = 0, n: int = 30, f: int = 6):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 12, size=n)
    offsets = np.r_[0, np.cumsum(lengths)]
    dense = rng.exponential(1.0, size=(offsets[-1], f)) * (rng.random((offsets[-1], f)) < 0.4)
    return dense, offsets


def _brute(dense, offsets, how, q=0.25):
    rows = []
    for i in range(offsets.size - 1):
        block = dense[offsets[i]:offsets[i + 1]]
        if how == "mean":
            rows.append(block.mean(0))
        elif how == "max":
            rows.append(block.max(0))
        elif how == "frac":
            rows.append((block != 0).mean(0))
        else:
            m = max(1, int(np.ceil(q * block.shape[0])))
            rows.append(np.sort(block, axis=0)[::-1][:m].mean(0))
    return np.array(rows)


@pytest.mark.parametrize("how", ["mean", "max", "frac", "topq"])
def test_pool_codes_matches_brute_force(how):
    dense, offsets = _tokens()
    got = pool_codes(scipy.sparse.csr_matrix(dense), offsets, how, q=0.3).toarray()
    np.testing.assert_allclose(got, _brute(dense, offsets, how, q=0.3), atol=1e-12)


def test_pool_codes_topq_limits_are_mean_and_max():
    dense, offsets = _tokens(1)
    codes = scipy.sparse.csr_matrix(dense)
    np.testing.assert_allclose(pool_codes(codes, offsets, "topq", q=1.0).toarray(),
                               pool_codes(codes, offsets, "mean").toarray(), atol=1e-12)
    np.testing.assert_allclose(pool_codes(codes, offsets, "topq", q=1e-9).toarray(),
                               pool_codes(codes, offsets, "max").toarray(), atol=1e-12)


def test_pool_codes_max_with_negative_values_counts_zero_tokens():
    dense = np.array([[-1.0], [0.0], [-2.0], [-3.0]])
    got = pool_codes(scipy.sparse.csr_matrix(dense), np.array([0, 2, 4]), "max").toarray().ravel()
    np.testing.assert_allclose(got, [0.0, -2.0])


@pytest.mark.parametrize("how", ["mean", "max", "frac", "topq"])
def test_pool_codes_of_a_latent_that_never_fires_and_an_empty_response(how):
    got = pool_codes(scipy.sparse.csr_matrix((5, 3)), np.array([0, 2, 2, 5]), how)
    assert got.shape == (3, 3) and got.nnz == 0


def test_pool_codes_rejects_bad_offsets_and_pooling():
    codes = scipy.sparse.csr_matrix(np.ones((4, 2)))
    with pytest.raises(DataError, match="offsets"):
        pool_codes(codes, np.array([0, 3]))
    with pytest.raises(DataError, match="pooling"):
        pool_codes(codes, np.array([0, 4]), "median")


def test_confound_table_flags_length_and_single_token_latents():
    rng = np.random.default_rng(3)
    n, punct = 200, 7
    lengths = rng.integers(5, 60, size=n)
    offsets = np.r_[0, np.cumsum(lengths)]
    t = offsets[-1]
    token_ids = rng.integers(10, 200, size=t)
    token_ids[rng.random(t) < 0.1] = punct
    resp = np.repeat(np.arange(n), lengths)
    codes = np.zeros((t, 4))
    codes[:, 0] = lengths[resp] / 60.0 * (rng.random(t) < 0.5)  # tracks length
    codes[:, 1] = (token_ids == 42) * 2.0                        # fires on one token type only
    codes[:, 2] = rng.exponential(1.0, size=t) * (rng.random(t) < 0.3)  # neither
    codes[:, 3] = (token_ids == punct) * 1.0                     # punctuation
    table = confound_table(scipy.sparse.csr_matrix(codes), offsets, token_ids, punctuation_ids=[punct])
    flags = flag_confounds(table)
    assert flags[0] and flags[1] and flags[3] and not flags[2]
    # the punctuation latent also sits on one token: the order length, style, single-token decides
    assert list(confound_kind(table)) == ["length", "single-token", "", "style"]
    assert list(confound_kind(table, max_corr=1.0, max_token_share=1.0)) == ["", "", "", ""]
    assert table["length_corr"][0] > 0.5
    assert table["top_token_share"][1] == pytest.approx(1.0)
    assert table["top_token"][1] == 42
    assert table["punct_corr"][3] > 0.9
    # oracles: numpy correlation of the mean-pooled latent with length, and the heaviest token's share by brute force
    pooled = _brute(codes, offsets, "mean")
    assert table["length_corr"][2] == pytest.approx(np.corrcoef(pooled[:, 2], lengths)[0, 1], abs=1e-9)
    mass = {tok: codes[token_ids == tok, 2].sum() for tok in np.unique(token_ids)}
    assert table["top_token_share"][2] == pytest.approx(max(mass.values()) / codes[:, 2].sum(), abs=1e-9)
    cov = response_covariates(offsets, token_ids, [punct])
    np.testing.assert_allclose(cov["length"], lengths)
    np.testing.assert_allclose(cov["punctuation"], [np.mean(token_ids[resp == i] == punct) for i in range(n)])


def test_residualize_removes_the_covariate_fitted_on_training_rows():
    rng = np.random.default_rng(4)
    c = rng.normal(size=300)
    signal = rng.normal(size=300)
    X = np.column_stack([3.0 * c + signal, signal])
    train = np.arange(200)
    R = residualize(X, c, train)
    assert abs(np.corrcoef(R[train, 0], c[train])[0, 1]) < 1e-9
    assert np.corrcoef(R[:, 0], signal)[0, 1] > 0.99
    # oracle: sklearn's least squares on the training rows
    from sklearn.linear_model import LinearRegression

    lr = LinearRegression().fit(c[train, None], X[train, 0])
    np.testing.assert_allclose(R[:, 0], X[:, 0] - lr.predict(c[:, None]), atol=1e-9)


def test_punctuation_token_ids_are_the_punctuation_tokens(tmp_path):
    from personas.scoring.confounds import punctuation_token_ids
    from personas.testing import train_toy_tokenizer

    tok = train_toy_tokenizer(tmp_path, ["Hello, world. How are you? Fine!", "money ... and -- more"])
    ids = punctuation_token_ids(tok)
    texts = {tok.convert_tokens_to_string([tok.convert_ids_to_tokens(i)]).strip() for i in ids}
    assert {",", ".", "?", "!"} <= texts
    assert not texts & {"hello", "world", "money", "Hello"}
    assert ids == sorted(ids)


def test_confound_kind_ignores_nan_and_rejects_bad_thresholds():
    table = {"length_corr": np.array([np.nan, 0.9]), "punct_corr": np.array([np.nan, 0.0]),
             "top_token_share": np.array([np.nan, np.nan])}
    assert list(confound_kind(table)) == ["", "length"]
    with pytest.raises(DataError, match="max_corr=1.5"):
        confound_kind(table, max_corr=1.5)


def test_every_ranking_carries_the_confound_columns_of_its_own_capture(toy_model, planted_sae, planted_data):
    """The columns of `rank` equal `personas.scoring.confounds` called by hand on the kept per-token codes, and numpy brute
    force; ``kind`` follows the recorded thresholds; `Ranking.persona` leaves out the flagged rows only."""
    import pandas as pd

    import personas
    from personas.config import CaptureConfig
    from personas.scoring.confounds import punctuation_token_ids

    from conftest import TOY_HOOK

    result = personas.rank(pd.DataFrame(planted_data), model=toy_model, sae=planted_sae,
                           capture=CaptureConfig(hook=TOY_HOOK), keep_tokens=True, progress=False)
    ranking, tc = result.ranking, result.capture.token_codes
    punct = punctuation_token_ids(toy_model.tokenizer)
    table = confound_table(tc.codes, tc.offsets, tc.token_ids, pooled=result.features, punctuation_ids=punct)
    rows = ranking["feature"].to_numpy()
    for name in ("length_corr", "punct_corr", "top_token_share", "top_token"):
        np.testing.assert_allclose(ranking[name].to_numpy(float), table[name][rows].astype(float), atol=1e-9)
    # brute force for the top row: numpy correlations of the pooled latent, and the heaviest token by a dict
    f = int(rows[0])
    pooled = result.features[:, f].toarray().ravel()
    lengths = np.diff(tc.offsets)
    share = np.array([np.isin(tc.token_ids[a:b], punct).mean() for a, b in zip(tc.offsets[:-1], tc.offsets[1:], strict=False)])
    assert ranking["length_corr"].iloc[0] == pytest.approx(np.corrcoef(pooled, lengths)[0, 1], abs=1e-9)
    assert ranking["punct_corr"].iloc[0] == pytest.approx(np.corrcoef(pooled, share)[0, 1], abs=1e-9)
    column = tc.codes[:, f].toarray().ravel().astype(np.float64)
    mass = {t: np.abs(column[tc.token_ids == t]).sum() for t in np.unique(tc.token_ids)}
    assert ranking["top_token_share"].iloc[0] == pytest.approx(max(mass.values()) / np.abs(column).sum(), abs=1e-9)
    # kind, by hand, from the thresholds the manifest records
    recorded = result.manifest["ranking"]["confounds"]
    c, s = recorded["max_corr"], recorded["max_token_share"]
    by_hand = ["length" if abs(r.length_corr) > c else "style" if abs(r.punct_corr) > c
               else "single-token" if r.top_token_share > s else "" for r in ranking.itertuples()]
    assert ranking["kind"].tolist() == by_hand
    assert {"length", "single-token"} <= set(by_hand)  # this data has both: a flagger that flags nothing fails here
    assert recorded["n_flagged"] == {k: by_hand.count(k) for k in ("length", "style", "single-token")}
    view = ranking.persona()
    assert len(view) == by_hand.count("") and set(view["kind"]) == {""} and len(ranking) == 64
    assert view["feature"].tolist() == [f for f, k in zip(rows, by_hand, strict=False) if k == ""]  # order kept
