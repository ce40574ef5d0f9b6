"""Tests for personas.scoring.streaming: shard-by-shard accumulation, merging and state round trips equal the
one-shot ranking."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from test_scoring import _confounded

from personas.errors import DataError
from personas.scoring import StreamingRanker, rank_features


@pytest.mark.parametrize("with_groups", [False, True])
def test_streaming_and_merge_equal_one_shot(with_groups, tmp_path):
    x, y, g = _confounded(seed=3)
    g = g if with_groups else None
    one = rank_features(sp.csr_matrix(x), y, g)
    cuts = [0, 100, 101, 350, len(y)]
    parts = []
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        acc = StreamingRanker()
        shard = x[a:b] if a % 2 else sp.csr_matrix(x[a:b])
        acc.update(shard, y[a:b], None if g is None else g[a:b])
        parts.append(acc)
    left = parts[0].merge(parts[1])
    right = parts[2].merge(parts[3])
    state = dict(np.load(_save(tmp_path, right.state_dict()), allow_pickle=False))
    merged = left.merge(StreamingRanker.from_state(state))
    got = merged.result()
    pd.testing.assert_frame_equal(got, one, check_exact=False, rtol=1e-10, atol=1e-12)
    assert got.meta == one.meta
    for col in ("auroc", "p_value", "feature", "frac_active_pos"):
        np.testing.assert_array_equal(got[col], one[col])


def _save(tmp_path, state):
    path = tmp_path / "state.npz"
    np.savez(path, **state)
    return path


def test_streaming_rejects_mismatched_shards():
    acc = StreamingRanker().update(np.ones((4, 3)), [0, 1, 0, 1])
    with pytest.raises(DataError, match="3 features"):
        acc.update(np.ones((2, 5)), [0, 1])
    with pytest.raises(DataError, match="groups"):
        acc.update(np.ones((2, 3)), [0, 1], ["a", "b"])
    with pytest.raises(DataError):
        StreamingRanker().result()


def test_state_without_a_scale_loads_with_unit_scale():
    x, y, _ = _confounded(seed=5)
    acc = StreamingRanker().update(x, y)
    state = acc.state_dict()
    assert state["scale"].shape == (x.shape[1],)
    old = {k: v for k, v in state.items() if k != "scale"}  # a state saved before moments carried a scale
    pd.testing.assert_frame_equal(StreamingRanker.from_state(old).result(), acc.result())
