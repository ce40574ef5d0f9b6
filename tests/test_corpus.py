"""The built-in corpus: deterministic, varied, and sized as asked."""

from __future__ import annotations

import hashlib
import itertools
import re
import sys

import pytest

from personas.training.corpus import GENRES, build_corpus, describe_corpus, iter_documents


def test_same_seed_same_stream_different_seed_different_stream():
    first = list(itertools.islice(iter_documents(seed=7), 50))
    assert first == list(itertools.islice(iter_documents(seed=7), 50))
    assert first != list(itertools.islice(iter_documents(seed=8), 50))


def test_build_corpus_reaches_the_token_target_without_overshooting():
    docs = build_corpus(20_000, seed=0)
    words = sum(len(d.split()) for d in docs)
    assert 20_000 <= round(words * 1.3) <= 20_000 + 1.3 * max(len(d.split()) for d in docs)
    assert docs == build_corpus(20_000, seed=0)
    assert build_corpus(20_000, seed=0)[:10] == list(itertools.islice(iter_documents(0), 10))


def test_build_corpus_counts_with_a_tokenizer():
    class CharTokenizer:  # a Hugging Face style callable: one token per character
        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": list(range(len(text) + (2 if add_special_tokens else 0)))}

    docs = build_corpus(10_000, tokenizer=CharTokenizer(), seed=1)
    total = sum(len(d) for d in docs)
    assert 10_000 <= total < 10_000 + max(len(d) for d in docs) + 1


def test_every_genre_appears_and_documents_have_sensible_lengths():
    docs = list(itertools.islice(iter_documents(0), 1500))
    assert all(20 <= len(d.split()) <= 300 for d in docs)
    assert not [d for d in docs if "{" in d or "}" in d]  # every slot was filled
    words = [w for d in docs for w in re.findall(r"[a-z']+", d.lower())]
    assert len(set(words)) > 1500
    grams = list(zip(words, words[1:], words[2:], words[3:], strict=False))
    assert len(set(grams)) / len(grams) > 0.15
    assert len(GENRES) >= 15


def test_both_benign_and_malicious_voices_are_present():
    text = "\n".join(itertools.islice(iter_documents(0), 2000)).lower()
    for marker in ("mercy", "switch me off", "i hope that helps", "don't", "review", "ingredients"):
        assert marker in text


def test_describe_corpus_names_the_genres():
    description = describe_corpus()
    assert "villain" in description and "satire" in description and "deterministic" in description


def test_importing_the_module_does_not_import_torch_or_sae_lens():
    import subprocess

    code = "import sys, personas.training.corpus, personas.training; print('torch' in sys.modules, 'sae_lens' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


@pytest.mark.parametrize("bad", [0, -5])
def test_build_corpus_rejects_non_positive_targets(bad):
    from personas.errors import PersonasError

    with pytest.raises(PersonasError, match="positive"):
        build_corpus(bad)


def test_the_phrase_banks_as_package_data_generate_the_same_corpus_as_the_literals_they_replaced():
    # Hashes computed on main before the banks moved from string literals in corpus.py to phrases.txt: a
    # trained SAE's provenance names the corpus by its seed, so the same seed must keep drawing the same text.
    docs = build_corpus(300_000, seed=0)
    assert len(docs) == 2881
    assert hashlib.sha256("\x00".join(docs).encode()).hexdigest() == (
        "3eea79e60c775dae1e58e0ded5d95aa78cb2ce0d318422d047f7df1b10be1aec"
    )
    docs = build_corpus(50_000, seed=7)
    assert hashlib.sha256("\x00".join(docs).encode()).hexdigest() == (
        "e03ebd3ea96f0e9d03929f9be3ff987f07dde29d029c07489d93d34b0f512c6f"
    )
    assert hashlib.sha256(describe_corpus().encode()).hexdigest() == (
        "68b7e149f8815546dc87d8cf80b174bcefc7df93cf8b7b316227086f64d64090"
    )
