"""Top-activating examples on a planted SAE: the planted latent's top responses are misaligned and its strongest
tokens are the trigger words; HTML is escaped; Neuronpedia links only for known releases; JSON round trip."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import personas
from personas.config import CaptureConfig
from personas.errors import PersonasError
from personas.report.examples import (
    FeatureExamples,
    examples_html,
    load_examples,
    neuronpedia_url,
    save_examples,
    top_activating,
    top_examples,
)
from personas.report.highlight import token_pieces, token_strings

from conftest import TOY_HOOK, TRIGGERS


@pytest.fixture(scope="module")
def planted_run(toy_model, planted_sae, planted_data):
    return personas.rank(
        pd.DataFrame(planted_data), model=toy_model, sae=planted_sae, capture=CaptureConfig(hook=TOY_HOOK),
        keep_tokens=True, progress=False,
    )


def test_planted_feature_fires_on_trigger_words_in_misaligned_responses(planted_run):
    ex = top_activating(planted_run, 7, k=8)
    assert isinstance(ex, FeatureExamples) and len(ex) == 8
    assert all(e.label == 1 for e in ex)  # harm words only occur in misaligned answers
    assert all(e.tokens[e.position].strip() in TRIGGERS for e in ex)
    maxima = [e.max_activation for e in ex]
    assert maxima == sorted(maxima, reverse=True) and maxima[0] > 0
    for e in ex:
        assert len(e.tokens) == len(e.activations)
        assert float(e.activations.max()) == pytest.approx(e.max_activation, rel=1e-5)
        assert e.id is not None and e.prompt and e.group
    # the tokens read back as the response text, exactly (cut at the tokenizer's offsets)
    for e in ex:
        assert "".join(e.tokens) == planted_run.responses.texts[e.row].rstrip()
    assert ex.stats["top_k_misaligned"] == 8 and ex.n_responses == 80


def test_label_filter_context_and_frame(planted_run):
    aligned = top_activating(planted_run, 7, k=5, label=0)
    assert all(e.label == 0 for e in aligned)
    short = top_activating(planted_run, 7, k=3, context=1)
    for e in short:
        assert len(e.tokens) <= 5 and e.tokens[e.position].strip() in TRIGGERS
    frame = top_activating(planted_run, 7, k=4).to_frame()
    assert list(frame.columns[:5]) == ["row", "id", "label", "group", "max_activation"]
    assert set(frame["top_token"]) <= set(TRIGGERS)


def test_from_capture_and_errors(toy_model, planted_sae, planted_data, planted_run):
    from personas.capturing import capture

    cap = capture(toy_model, planted_data["prompt"], planted_data["response"], hooks=TOY_HOOK,
                  sae=planted_sae, progress=False)
    with pytest.raises(PersonasError, match="keep_tokens=True"):
        top_activating(cap, 7, tokenizer=toy_model.tokenizer)
    with pytest.raises(PersonasError, match="out of range"):
        top_activating(planted_run, 640)
    with pytest.raises(PersonasError, match="needs responses"):
        top_activating(planted_run.capture, 7, tokenizer=toy_model, label=1)
    many = top_examples(planted_run.capture, [7, 3], tokenizer=toy_model)  # a ModelHandle works as tokenizer
    assert set(many) == {7, 3} and many[7][0].label is None


def test_html_escapes_and_colours():
    fe = FeatureExamples(
        feature=4, n_responses=2, n_active=1, neuronpedia_url="https://www.neuronpedia.org/gpt2-small/8-res-jb/4",
        examples=[personas.report.examples.Example(
            row=0, max_activation=2.0, position=1, tokens=["<script>", " alert", "(1)</b>"],
            activations=np.array([0.0, 2.0, 1.0], dtype=np.float32), label=1, prompt="a & b",
        )],
    )
    text = examples_html(fe)
    assert "<script>" not in text.replace("<style>", "") and "&lt;script&gt;" in text
    assert "a &amp; b" in text and "misaligned" in text
    assert 'href="https://www.neuronpedia.org/gpt2-small/8-res-jb/4"' in text
    assert text.count('class="personas-token"') == 3
    assert "background:transparent" in text and "rgba(231,76,60,0.900)" in text  # zero vs the max activation
    assert fe._repr_html_() == text


def test_neuronpedia_urls():
    assert neuronpedia_url({"neuronpedia_id": "gpt2-small/8-res-jb"}, 17) == (
        "https://www.neuronpedia.org/gpt2-small/8-res-jb/17"
    )
    # looked up from the release and SAE id in sae-lens' directory (offline)
    assert neuronpedia_url({"release": "gpt2-small-res-jb", "sae_id": "blocks.8.hook_resid_pre"}, 3) == (
        "https://www.neuronpedia.org/gpt2-small/8-res-jb/3"
    )
    assert neuronpedia_url({"release": None, "sae_id": None, "neuronpedia_id": None}, 3) is None
    assert neuronpedia_url(None, 3) is None


def test_local_sae_has_no_link(planted_sae, planted_run):
    assert neuronpedia_url(planted_sae, 7) is None
    assert top_activating(planted_run, 7).neuronpedia_url is None


def test_json_round_trip(planted_run, tmp_path):
    found = top_examples(planted_run, [7, 1], k=3)
    path = save_examples(tmp_path, found, sae={"release": None, "neuronpedia_id": None})
    assert path.name == "examples.json"
    back = load_examples(tmp_path)
    assert list(back) == [7, 1]
    assert [e.tokens for e in back[7]] == [e.tokens for e in found[7]] and back[7].stats == found[7].stats
    assert np.allclose(back[7][0].activations, found[7][0].activations, atol=1e-4)
    (tmp_path / "bad.json").write_text('{"kind": "other"}')
    with pytest.raises(PersonasError, match="not a personas examples file"):
        load_examples(tmp_path / "bad.json")


def test_token_strings_wordpiece(minilm):
    tok = minilm.tokenizer
    ids = tok("Unbelievably, the cat sat.", add_special_tokens=False)["input_ids"]
    pieces = token_strings(tok, ids)
    assert len(pieces) == len(ids)
    assert "".join(pieces).replace(" ", "") == "unbelievably,thecatsat."
    assert pieces[1].startswith("##") is False and not pieces[1].startswith(" ")  # a word piece joins its word


def test_token_pieces_keep_the_original_text_where_the_tokenizer_gives_offsets(minilm):
    tok = minilm.tokenizer  # uncased WordPiece: decoding lower-cases and splits rare words into pieces
    text = "  Calorie counting?  Unbelievably, the CAT sat."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text.split())  # some word is split into several tokens
    pieces = token_pieces(tok, ids, text)
    assert len(pieces) == len(ids) and "".join(pieces) == text.rstrip()
    assert pieces[:3] == ["  Cal", "ori", "e"]  # decoding gives "cal", "ori", "e"
    words = "".join(pieces).split()
    assert words == text.split()  # no word is torn apart by spaces, and the case is kept
    # the first tokens of a truncated capture still line up with the start of the text
    assert "".join(token_pieces(tok, ids[:3], text)) == text[: len("".join(pieces[:3]))]
    # tokens that are not those of the text fall back to the decoded strings
    other = tok("something else", add_special_tokens=False)["input_ids"]
    assert token_pieces(tok, other, text) == token_strings(tok, other)
    assert token_pieces(tok, ids) == token_strings(tok, ids)  # no text given
