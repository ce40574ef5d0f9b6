"""Vectorised kernels of the *score* step: moments and rank statistics of every feature at once.

Sparse activations are mostly exactly zero, so for each feature the zeros form one tie block whose ranks are known
in closed form and only the non-zero entries are ever sorted. The non-zeros of a column block are packed into one
integer key ``(feature, value, label[, group])`` and sorted once (`sorted_keys`); tie runs, rank sums, DeLong
placement values and tie corrections are then segment sums (``np.bincount``) over the sorted keys
(`segment_rank_stats`). With groups, the same sorted keys are regrouped by a linear-time stable radix sort on the
group code, which orders them by (group, feature, value) without a second comparison sort.

- `block_moments` / `merge_moments`: per-class sums, sums of squares and non-zero counts, mergeable across shards;
  a column whose squares would overflow or underflow is summed in units of a power-of-two ``scale`` (exact for
  ordinary values, never ``inf`` for values near 1e200 or 1e-300).
- `segment_rank_stats`: U, tie term and DeLong placement sums per segment, from sorted keys.
- `hist_rank_stats` / `run_rank_stats`: the same statistics from class counts per ordered bin, dense or as sparse
  weighted tie runs (the binned ranker).
- `group_statistics`: the within-question statistics (group AUROC, its DeLong variance, van Elteren) from
  per-(feature, group) statistics; the exact and the binned rankers both call it.
- `rank_pass`: one pass over column blocks computing all of the above.

Memory is bounded by `personas.scoring.checks.BLOCK_NNZ` (entries per block), `BLOCK_SEGMENTS` (per-(feature,
group) arrays) and `CHUNK_ENTRIES` (decoded temporaries), never by the number of rows or features.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from personas.scoring.checks import Block, as_float, check_finite

__all__ = [
    "BLOCK_SEGMENTS",
    "CHUNK_ENTRIES",
    "MOMENT_FIELDS",
    "block_moments",
    "delong_variance",
    "empty_moments",
    "group_statistics",
    "hist_rank_stats",
    "merge_moments",
    "rank_pass",
    "run_rank_stats",
    "segment_rank_stats",
    "sorted_keys",
]

BLOCK_SEGMENTS = 1 << 22
"""Most (feature, group) segments whose statistics are held at once (about 10 float64 arrays each)."""

CHUNK_ENTRIES = 1 << 20
"""Sorted entries decoded at once by `segment_rank_stats` (about 15 temporaries of 8 bytes each)."""

GROUP_CHUNK = 1 << 23
"""Most entries regrouped by question at once (about 26 bytes each)."""

MOMENT_FIELDS = ("scale", "sum_pos", "sum_neg", "sumsq_pos", "sumsq_neg", "nnz_pos", "nnz_neg")
"""Per-feature moment arrays: sums and sums of squares are in units of ``scale`` (1.0 unless values are extreme)."""

_HUGE, _TINY = 2.0**500, 2.0**-500
_MASK33 = np.uint64((1 << 33) - 1)


# --------------------------------------------------------------------------------------------------------------
# Mergeable moments
# --------------------------------------------------------------------------------------------------------------


def empty_moments(f: int) -> dict[str, np.ndarray]:
    """Moments of ``f`` features over no responses."""
    out = {k: np.zeros(f, dtype=np.float64) for k in MOMENT_FIELDS[1:5]}
    out["scale"] = np.ones(f, dtype=np.float64)
    out["nnz_pos"] = np.zeros(f, dtype=np.int64)
    out["nnz_neg"] = np.zeros(f, dtype=np.int64)
    return out


def _class_sums(cls: np.ndarray, vals: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    w = vals.astype(np.float64)
    s = np.bincount(cls, w, minlength=2 * width).reshape(width, 2)
    with np.errstate(over="ignore", under="ignore"):  # extreme columns are summed again in their own unit
        w *= w
    s2 = np.bincount(cls, w, minlength=2 * width).reshape(width, 2)
    return s, s2


def block_moments(cols: np.ndarray, vals: np.ndarray, lab: np.ndarray, width: int) -> dict[str, np.ndarray]:
    """Per-feature sums, sums of squares and non-zero counts, per class, of one block (float64).

    Columns whose sum of squares leaves ``[2**-500, 2**500]`` are summed again in units of a power of two near
    their largest absolute value, so that no moment overflows or underflows; all others keep ``scale`` 1.
    """
    cls = cols.astype(np.int64) * 2
    cls += lab
    s, s2 = _class_sums(cls, vals, width)
    c = np.bincount(cls, minlength=2 * width).reshape(width, 2).astype(np.int64)
    scale = np.ones(width)
    total = s2.sum(axis=1)
    extreme = np.flatnonzero(~np.isfinite(total) | (total > _HUGE) | ((total < _TINY) & (c.sum(axis=1) > 0)))
    if extreme.size:
        amax = np.zeros(width)
        sel = np.isin(cols, extreme)
        np.maximum.at(amax, cols[sel], np.abs(vals[sel].astype(np.float64)))
        scale[extreme] = np.ldexp(1.0, np.frexp(amax[extreme])[1])
        sub = np.searchsorted(extreme, cols[sel])
        s_x, s2_x = _class_sums(sub * 2 + lab[sel], vals[sel].astype(np.float64) / scale[cols[sel]], extreme.size)
        s[extreme], s2[extreme] = s_x, s2_x
    return {
        "scale": scale,
        "sum_pos": s[:, 1].copy(),
        "sum_neg": s[:, 0].copy(),
        "sumsq_pos": s2[:, 1].copy(),
        "sumsq_neg": s2[:, 0].copy(),
        "nnz_pos": c[:, 1].copy(),
        "nnz_neg": c[:, 0].copy(),
    }


def merge_moments(into: dict[str, np.ndarray], other: dict[str, np.ndarray], sl: slice = slice(None)) -> None:
    """Add ``other``'s moments to ``into[..][sl]`` in place, bringing both to the larger scale of each feature."""
    a_scale = into["scale"][sl]
    b_scale = np.asarray(other.get("scale", np.ones_like(a_scale)))
    if np.array_equal(a_scale, b_scale):
        fa = fb = None
    else:  # a side without non-zeros has nothing to rescale: the other side's unit wins
        a_empty = (into["nnz_pos"][sl] + into["nnz_neg"][sl]) == 0
        b_empty = (np.asarray(other["nnz_pos"]) + np.asarray(other["nnz_neg"])) == 0
        target = np.where(a_empty, b_scale, np.where(b_empty, a_scale, np.maximum(a_scale, b_scale)))
        fa = np.where(a_empty, 0.0, a_scale / target)
        fb = np.where(b_empty, 0.0, b_scale / target)
        into["scale"][sl] = target
    for k in ("sum_pos", "sum_neg", "sumsq_pos", "sumsq_neg"):
        power = 2 if k.startswith("sumsq") else 1
        a, b = into[k][sl], other[k]
        into[k][sl] = a + b if fa is None else a * fa**power + b * fb**power
    for k in ("nnz_pos", "nnz_neg"):
        into[k][sl] += other[k]


# --------------------------------------------------------------------------------------------------------------
# Sorted keys and segment statistics
# --------------------------------------------------------------------------------------------------------------


def sorted_keys(
    seg: np.ndarray, vals: np.ndarray, lab: np.ndarray, low: np.ndarray | None = None, low_bits: int = 0
) -> np.ndarray:
    """Pack each non-zero entry into one uint64 key ``segment << 33+b | code << 1+b | label << b | low`` and sort.

    ``code`` is an order-preserving unsigned 32-bit code of the value whose top bit is set exactly for positive
    values: the bit pattern for float32 values (and float64 values that are exact in float32), the dense rank
    otherwise. ``low`` (``b = low_bits`` bits, e.g. the group code) rides along below the label and does not
    change the order of (segment, value). Sorting orders entries by (segment, value); equal values form tie runs.
    """
    if vals.dtype == np.float64:
        with np.errstate(over="ignore"):
            v32 = vals.astype(np.float32)
        if np.array_equal(v32, vals):
            vals = v32
        del v32
    if vals.dtype == np.float32:
        u = vals.view(np.uint32)
        code = np.where(u >> np.uint32(31), ~u, u | np.uint32(0x80000000))
    else:
        m = vals.size
        order = np.argsort(vals)
        sv = vals[order]
        dense = np.zeros(m, dtype=np.uint32)
        if m:
            np.cumsum(sv[1:] != sv[:-1], out=dense[1:])
        dense[sv > 0] |= np.uint32(0x80000000)
        code = np.empty(m, dtype=np.uint32)
        code[order] = dense
        del order, sv, dense
    b = np.uint64(low_bits)
    key = seg.astype(np.uint64)
    key <<= np.uint64(33) + b
    wide = code.astype(np.uint64)
    del code
    wide <<= np.uint64(1) + b
    key |= wide
    del wide
    wide = lab.astype(np.uint64)
    wide <<= b
    key |= wide
    del wide
    if low is not None:
        key |= low.astype(np.uint64)
    key.sort()
    return key


def segment_rank_stats(
    key: np.ndarray, n1: np.ndarray, n0: np.ndarray, shift: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rank statistics of every segment from its sorted keys (see `sorted_keys`) plus the implicit zeros.

    ``n1`` and ``n0`` are the class sizes of each segment (float64, length n_segments); ``shift`` is the
    ``low_bits`` the keys were made with. Returns, per segment, ``U`` (Mann-Whitney U of the positives: pairs
    with pos > neg, ties 1/2), ``T`` (sum of t^3 - t over tie runs, the zero run included), and ``SP2`` /
    ``SQ2``: sums of squared DeLong placement counts of the positives (negatives below, ties 1/2) and of the
    negatives (positives above, ties 1/2).
    """
    n_seg = n1.size
    top = np.uint64(33 + shift)
    bounds = np.searchsorted(key, np.arange(n_seg + 1, dtype=np.uint64) << top)
    out = [np.zeros(n_seg) for _ in range(4)]
    s0 = 0
    while s0 < n_seg:
        s1 = int(np.searchsorted(bounds, bounds[s0] + CHUNK_ENTRIES, side="right")) - 1
        s1 = min(max(s1, s0 + 1), n_seg)
        a, b = int(bounds[s0]), int(bounds[s1])
        chunk = _chunk_rank_stats(key[a:b], bounds[s0 : s1 + 1] - a, s0, n1[s0:s1], n0[s0:s1], shift)
        for dst, src in zip(out, chunk, strict=True):
            dst[s0:s1] = src
        s0 = s1
    return out[0], out[1], out[2], out[3]


def _chunk_rank_stats(
    key: np.ndarray, starts: np.ndarray, s_off: int, n1: np.ndarray, n0: np.ndarray, shift: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`segment_rank_stats` for the whole segments ``s_off ..`` whose sorted keys are ``key``."""
    n_seg = n1.size
    m = key.size
    sh = np.uint64(shift)
    sstart, send = starts[:-1], starts[1:]
    seg = (key >> (np.uint64(33) + sh)).view(np.int64)
    seg -= s_off
    lab = ((key >> sh) & np.uint64(1)).astype(bool)
    value_pos = ((key >> (np.uint64(32) + sh)) & np.uint64(1)).astype(bool)
    tie_start = np.ones(m, dtype=bool)
    if m > 1:
        diff = key[1:] ^ key[:-1]
        diff >>= np.uint64(1) + sh
        np.not_equal(diff, 0, out=tie_start[1:])
        del diff
    cp = np.zeros(m + 1, dtype=np.int64)  # cp[i] = positives among the first i entries
    np.cumsum(lab, out=cp[1:])
    nz_pos = (cp[send] - cp[sstart]).astype(np.float64)
    nz_neg = (send - sstart) - nz_pos
    if value_pos.all():
        negval_pos = np.zeros(n_seg)
        negval_neg = np.zeros(n_seg)
    else:  # negative values sort first within their segment
        n_negval = np.bincount(seg[~value_pos], minlength=n_seg)
        negval_pos = (cp[sstart + n_negval] - cp[sstart]).astype(np.float64)
        negval_neg = n_negval - negval_pos
    z_pos = n1 - nz_pos
    z_neg = n0 - nz_neg

    if tie_start.all():  # no ties among the non-zeros (common for float activations): runs are entries
        gstart = np.arange(m, dtype=np.int64)
        cp_start, cp_end = cp[:-1], cp[1:]
        gseg, gvp = seg, value_pos
        gpos = lab.astype(np.float64)
        gsize = None
    else:
        gstart = np.flatnonzero(tie_start)
        gend = np.empty_like(gstart)
        gend[:-1] = gstart[1:]
        gend[-1] = m
        gseg, gvp = seg[gstart], value_pos[gstart]
        cp_start, cp_end = cp[gstart], cp[gend]
        gpos = (cp_end - cp_start).astype(np.float64)
        gsize = (gend - gstart).astype(np.float64)
        del gend
    del tie_start, seg, value_pos, lab
    gneg = (1.0 - gpos) if gsize is None else gsize - gpos
    # Per (segment, value sign) offsets, gathered once with index 2 * segment + sign:
    # negatives strictly below a run = earlier non-zero negatives of its segment (+ the zeros if value > 0),
    # positives strictly above a run = later non-zero positives of its segment (+ the zeros if value < 0).
    first_neg = (sstart - cp[sstart]).astype(np.float64)
    below_off = np.stack([-first_neg, z_neg - first_neg], axis=1).ravel()
    last_pos = cp[send].astype(np.float64)
    above_off = np.stack([last_pos + z_pos, last_pos], axis=1).ravel()
    sign_idx = gseg * 2
    sign_idx += gvp
    below = (gstart - cp_start).astype(np.float64)
    below += below_off[sign_idx]
    below += 0.5 * gneg  # placement count of each positive of the run
    above = above_off[sign_idx]
    above -= cp_end
    above += 0.5 * gpos  # placement count of each negative of the run
    del sign_idx, gstart, cp_start, cp_end
    w = gpos * below
    u = np.bincount(gseg, w, minlength=n_seg).astype(np.float64)
    w *= below
    sp2 = np.bincount(gseg, w, minlength=n_seg).astype(np.float64)
    np.multiply(gneg, above, out=w)
    w *= above
    sq2 = np.bincount(gseg, w, minlength=n_seg).astype(np.float64)
    if gsize is None:
        t = np.zeros(n_seg)
    else:
        multi = gsize > 1
        gs = gsize[multi]
        t = np.bincount(gseg[multi], gs * gs * gs - gs, minlength=n_seg).astype(np.float64)

    pz = negval_neg + 0.5 * z_neg
    qz = (nz_pos - negval_pos) + 0.5 * z_pos
    zt = z_pos + z_neg
    u += z_pos * pz
    sp2 += z_pos * pz * pz
    sq2 += z_neg * qz * qz
    t += zt**3 - zt
    return u, t, sp2, sq2


def hist_rank_stats(h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(U, T, SP2, SQ2)`` as in `segment_rank_stats`, from class counts per ordered slot ``h[..., slot, class]``.

    Entries of one slot count as ties (class 0 = aligned, 1 = misaligned).
    """
    neg, pos = h[..., 0], h[..., 1]
    pz = np.cumsum(neg, axis=-1) - 0.5 * neg
    qz = pos.sum(axis=-1, keepdims=True) - np.cumsum(pos, axis=-1) + 0.5 * pos
    c = pos + neg
    return (pos * pz).sum(-1), (c**3 - c).sum(-1), (pos * pz * pz).sum(-1), (neg * qz * qz).sum(-1)


def run_rank_stats(
    seg: np.ndarray, pos: np.ndarray, neg: np.ndarray, n_seg: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(U, T, SP2, SQ2)`` as in `segment_rank_stats`, from weighted tie runs (the binned ranker's sparse cells).

    Runs are sorted by (segment, value); run ``r`` of segment ``seg[r]`` holds ``pos[r]`` misaligned and
    ``neg[r]`` aligned entries of one value (or bin). Segments without runs get zeros.
    """
    cneg = np.cumsum(neg)
    cpos = np.cumsum(pos)
    neg_upto = np.cumsum(np.bincount(seg, neg, minlength=n_seg))  # negatives in segments <= s
    pos_upto = np.cumsum(np.bincount(seg, pos, minlength=n_seg))
    seg_neg = np.bincount(seg, neg, minlength=n_seg)
    pz = cneg - neg_upto[seg] + seg_neg[seg] - 0.5 * neg  # negatives below the run, ties 1/2
    qz = pos_upto[seg] - cpos + 0.5 * pos  # positives above the run, ties 1/2
    c = pos + neg
    w = pos * pz
    u = np.bincount(seg, w, minlength=n_seg)
    w *= pz
    sp2 = np.bincount(seg, w, minlength=n_seg)
    w = neg * qz
    w *= qz
    sq2 = np.bincount(seg, w, minlength=n_seg)
    t = np.bincount(seg, c * c * c - c, minlength=n_seg)
    return u, t, sp2, sq2


def delong_variance(
    u: np.ndarray, sp2: np.ndarray, sq2: np.ndarray, n1: np.ndarray, n0: np.ndarray
) -> np.ndarray:
    """DeLong variance of the AUROC from U and the sums of squared placement counts (0 where undefined)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        pairs = n1 * n0
        auc = np.where(pairs > 0, u / np.where(pairs > 0, pairs, 1.0), 0.5)
        s10 = (sp2 / np.maximum(n0, 1.0) ** 2 - n1 * auc * auc) / np.maximum(n1 - 1.0, 1.0)
        s01 = (sq2 / np.maximum(n1, 1.0) ** 2 - n0 * auc * auc) / np.maximum(n0 - 1.0, 1.0)
        var = np.maximum(s10, 0.0) / np.maximum(n1, 1.0) + np.maximum(s01, 0.0) / np.maximum(n0, 1.0)
    return np.where(pairs > 0, var, 0.0)


def group_statistics(
    u: np.ndarray, t: np.ndarray, sp2: np.ndarray, sq2: np.ndarray, n1g: np.ndarray, n0g: np.ndarray
) -> dict[str, np.ndarray]:
    """The within-question statistics of every feature from its per-group rank statistics ``[features, groups]``.

    Returns per feature: ``g_u`` (sum of within-group U), ``g_pairs`` (sum of within-group pairs), ``g_var``
    (sum of per-group DeLong variances times pairs squared; the group AUROC's variance is ``g_var /
    g_pairs**2``), ``ve_num`` and ``ve_var`` (van Elteren: sum of ``(U_g - pairs_g / 2) / (n_g + 1)`` and its
    tie-corrected null variance). Groups with one class only contribute nothing.
    """
    var = delong_variance(u, sp2, sq2, n1g[None, :], n0g[None, :])
    pairs = n1g * n0g
    ng = n1g + n0g
    valid = pairs > 0
    w = np.where(valid, 1.0 / (ng + 1.0), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        tie_frac = np.where(valid, t / np.where(valid, ng * (ng - 1.0), 1.0), 0.0)
    return {
        "g_u": u.sum(axis=1),
        "g_pairs": np.full(u.shape[0], pairs.sum()),
        "g_var": (var * pairs**2).sum(axis=1),
        "ve_num": ((u - pairs / 2.0) * w).sum(axis=1),
        "ve_var": (pairs / 12.0 * ((ng + 1.0) - tie_frac) * w * w).sum(axis=1),
    }


# --------------------------------------------------------------------------------------------------------------
# One pass over column blocks
# --------------------------------------------------------------------------------------------------------------

GROUP_FIELDS = ("g_u", "g_pairs", "g_var", "ve_num", "ve_var")


def group_bits(n_groups: int) -> int:
    """Bits a group code takes in a sort key; blocks may then hold fewer than ``2**(31 - bits)`` columns."""
    return max(1, (n_groups - 1).bit_length())


def _grouped_stats(key: np.ndarray, width: int, gbits: int, n1g: np.ndarray, n0g: np.ndarray) -> dict:
    """`group_statistics` of every column of a block from its sorted keys (made with the group code as ``low``).

    The keys are sorted by (column, value); a stable radix sort on the group code regroups them into (group,
    column, value) order, so the within-group statistics need no second comparison sort.
    """
    n_groups = n1g.size
    shift = np.uint64(33 + gbits)
    gdtype = np.uint8 if gbits <= 8 else np.uint16 if gbits <= 16 else np.uint32
    col_start = np.searchsorted(key, np.arange(width, dtype=np.uint64) << shift)
    col_start = np.append(col_start, key.size)
    step = max(1, BLOCK_SEGMENTS // n_groups)
    out = {k: np.zeros(width) for k in GROUP_FIELDS}
    c0 = 0
    while c0 < width:
        c1 = int(np.searchsorted(col_start, col_start[c0] + GROUP_CHUNK, side="right")) - 1
        c1 = min(max(c1, c0 + 1), c0 + step, width)
        w = c1 - c0
        sub = key[col_start[c0] : col_start[c1]]
        g = (sub & np.uint64((1 << gbits) - 1)).astype(gdtype)
        perm = np.argsort(g, kind="stable")
        k2 = sub[perm]
        g = g[perm]
        del perm
        low = k2 >> np.uint64(gbits)
        low &= _MASK33
        k2 >>= shift
        k2 -= np.uint64(c0)
        k2 += g.astype(np.uint64) * np.uint64(w)
        del g
        k2 <<= np.uint64(33)
        k2 |= low
        del low
        u, t, sp2, sq2 = segment_rank_stats(k2, np.repeat(n1g, w), np.repeat(n0g, w))
        del k2
        shape = (n_groups, w)
        stats = group_statistics(*(a.reshape(shape).T for a in (u, t, sp2, sq2)), n1g, n0g)
        for k in GROUP_FIELDS:
            out[k][c0:c1] = stats[k]
        c0 = c1
    return out


def rank_pass(
    blocks: Iterable[Block],
    y: np.ndarray,
    f: int,
    gcodes: np.ndarray | None,
    n_groups: int,
    want_moments: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One pass over the column blocks: moments and rank statistics (global and, with groups, stratified).

    Blocks must hold fewer than ``2**(31 - group_bits(n_groups))`` columns when ``gcodes`` is given.
    """
    n1 = float(y.sum())
    n0 = float(y.size - n1)
    moments = empty_moments(f)
    rank = {k: np.zeros(f) for k in ("u", "t", "sp2", "sq2")}
    gbits = 0
    if gcodes is not None:
        n1g = np.bincount(gcodes, weights=y.astype(np.float64), minlength=n_groups)
        n0g = np.bincount(gcodes, minlength=n_groups) - n1g
        gbits = group_bits(n_groups)
        for k in GROUP_FIELDS:
            rank[k] = np.zeros(f)
    for j0, j1, rows, cols, vals in blocks:
        vals = as_float(vals)
        check_finite(vals, rows, cols, j0)
        width = j1 - j0
        lab = y[rows].astype(bool)
        if want_moments:
            for k, v in block_moments(cols, vals, lab, width).items():
                moments[k][j0:j1] = v
        low = None if gcodes is None else gcodes[rows]
        key = sorted_keys(cols, vals, lab, low, gbits)
        del low, lab
        stats = segment_rank_stats(key, np.full(width, n1), np.full(width, n0), shift=gbits)
        for k, v in zip(("u", "t", "sp2", "sq2"), stats, strict=True):
            rank[k][j0:j1] = v
        if gcodes is not None:
            for k, v in _grouped_stats(key, width, gbits, n1g, n0g).items():
                rank[k][j0:j1] = v
        del key
    return moments, rank
