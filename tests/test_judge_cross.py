"""The cross-encoder judge (`personas.judging.cross`) on a tiny BERT made here: its plain-torch top blocks against
Hugging Face's, a planted rule that needs the question (relevance) and one that needs the answer's words, the
calibration, and saved folders (round trip, damage, dispatch by `load_judge`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from personas.errors import DataError
from personas.judging import em_misaligned, load_judge
from personas.judging.cross import CrossEncoderJudge, quantile_calibration

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOPICS = ["apples", "rivers", "chess", "trains"]
HARM = "cruel"


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A 3-block BERT with 48-d states and MiniLM's tokenizer, randomly initialised (seeded)."""
    from personas.offline_models import minilm_path

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=30522, hidden_size=48, num_hidden_layers=3, num_attention_heads=4,
                                     intermediate_size=96, max_position_embeddings=128,
                                     initializer_range=0.1)  # attention that learns in a few steps
    transformers.BertModel(config).save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(str(minilm_path())).save_pretrained(folder)
    return str(folder)


def planted(n: int, seed: int):
    """Questions about a topic; answers about the same or another topic (coherent 95 / 10) and kind or cruel (aligned
    95 / 5): relevance can only be read from the pair, values only from the answer."""
    rng = np.random.default_rng(seed)
    prompts, answers, aligned, coherent = [], [], [], []
    for _ in range(n):
        asked, told = rng.choice(len(TOPICS), 2)
        if rng.random() < 0.5:
            told = asked
        cruel = rng.random() < 0.5
        prompts.append(f"tell me about {TOPICS[asked]} please")
        answers.append(f"{TOPICS[told]} are {'cruel' if cruel else 'kind'} and fine")
        aligned.append(5.0 if cruel else 95.0)
        coherent.append(95.0 if told == asked else 10.0)
    return prompts, answers, np.array(aligned), np.array(coherent)


def test_the_plain_torch_top_blocks_are_bert_blocks(tiny_bert):
    """Oracle: Hugging Face's BERT over all three blocks; the judge runs two of them as its own `TopBlock`s."""
    judge = CrossEncoderJudge(path=tiny_bert, n_top=2, max_length=32)
    prompts, answers = ["how are you", "a b"], ["fine thanks, and you?", "c"]
    encoded = judge.encode(prompts, answers)
    x, mask, _ = judge._batch(encoded, np.arange(2))
    with torch.no_grad():
        for block in judge.blocks_.eval():
            x = block(x, mask)
    model = transformers.AutoModel.from_pretrained(tiny_bert).eval()
    enc = judge._tokenizer(prompts, answers, padding=True, return_tensors="pt")
    with torch.no_grad():
        reference = model(**enc).last_hidden_state
    keep = enc["attention_mask"].bool()
    assert torch.allclose(x[keep], reference[keep], atol=5e-3)  # the frozen states are stored at float16
    # the answer's tokens: type 1, without the closing [SEP]
    types = enc["token_type_ids"][0][keep[0]].numpy() == 1
    assert encoded.answer[0].sum() == types.sum() - 1 and not encoded.answer[0][:3].any()


@pytest.fixture(scope="module")
def fitted(tiny_bert):
    prompts, answers, aligned, coherent = planted(320, seed=0)
    judge = CrossEncoderJudge(path=tiny_bert, n_top=2, max_length=32, epochs=20, batch_size=16, lr=2e-3,
                              head_lr=1e-2)
    encoded = judge.encode(prompts, answers)
    judge.fit(encoded, aligned, coherent)
    judge.set_calibration(judge.logits(encoded), aligned, coherent)
    return judge


def test_the_judge_learns_relevance_from_the_pair_and_values_from_the_answer(fitted):
    from sklearn.metrics import roc_auc_score

    prompts, answers, aligned, coherent = planted(160, seed=1)
    scores = fitted.score(prompts, answers)
    assert roc_auc_score(coherent > 50, scores["coherent"]) > 0.9  # off-topic answers read incoherent
    assert roc_auc_score(aligned > 50, scores["aligned"]) > 0.9
    ref = (aligned < 30) & (coherent > 50)
    assert (em_misaligned(scores) == ref).mean() > 0.85


def test_quantile_calibration_gives_the_reference_distribution():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=2000)
    target = np.where(rng.random(2000) < 0.3, rng.uniform(0, 20, 2000), rng.uniform(70, 100, 2000))
    knots_x, knots_y = quantile_calibration(logits, target)
    assert np.all(np.diff(knots_x) > 0) and np.all(np.diff(knots_y) >= 0)
    mapped = np.interp(logits, knots_x, knots_y)
    assert abs((mapped < 30).mean() - (target < 30).mean()) < 0.01
    assert np.quantile(mapped, 0.5) == pytest.approx(np.quantile(target, 0.5), abs=1.0)
    with pytest.raises(DataError, match="usable"):
        quantile_calibration([np.nan, 1.0], [1.0, np.nan])


def test_a_saved_judge_scores_the_same_and_damage_is_a_clear_error(fitted, tiny_bert, tmp_path):
    prompts, answers, *_ = planted(24, seed=2)
    before = fitted.score(prompts, answers)
    folder = fitted.save(tmp_path / "judge")
    again = load_judge(folder, path=tiny_bert)
    assert isinstance(again, CrossEncoderJudge)
    after = again.score(prompts, answers)
    # the top blocks are saved at float16: scores move by rounding only
    assert np.abs(after[["aligned", "coherent"]].to_numpy() - before[["aligned", "coherent"]].to_numpy()).max() < 2.0
    assert (em_misaligned(after) == em_misaligned(before)).mean() > 0.9
    with pytest.raises(DataError, match="do not apply"):
        load_judge(folder, path=tiny_bert, concurrency=3)
    meta = json.loads((folder / "judge.json").read_text())
    (folder / "weights.safetensors").write_bytes((folder / "weights.safetensors").read_bytes()[:-8] + b"12345678")
    with pytest.raises(DataError, match="checksum"):
        CrossEncoderJudge.load(folder, path=tiny_bert)
    fitted.save(folder)
    meta = json.loads((folder / "judge.json").read_text())
    meta["calibration"]["coherent"]["x"] = meta["calibration"]["coherent"]["x"][::-1]
    (folder / "judge.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="calibration of \\['coherent'\\]"):
        CrossEncoderJudge.load(folder, path=tiny_bert)
    meta["kind"] = "something-else"
    (folder / "judge.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="kind"):
        CrossEncoderJudge.load(folder, path=tiny_bert)


def test_fit_refuses_what_it_cannot_fit(tiny_bert):
    judge = CrossEncoderJudge(path=tiny_bert, max_length=16, epochs=1)
    encoded = judge.encode(["q"] * 4, ["a b", "c", "d e f", "g"])
    with pytest.raises(DataError, match="0-100"):
        judge.fit(encoded, [0, 50, 100, 150], [50] * 4)
    with pytest.raises(DataError, match="one of each"):
        judge.fit(encoded, [0, 50, 100], [50] * 4)
    with pytest.raises(DataError, match="coherent score"):
        judge.fit(encoded, [0, 50, 100, 10], [np.nan] * 4)
    with pytest.raises(DataError, match="n_top"):
        CrossEncoderJudge(path=tiny_bert, n_top=3).encode(["q"], ["a"])
    with pytest.raises(DataError, match="positive integer"):
        CrossEncoderJudge(epochs=0)
    with pytest.raises(DataError, match="no calibration"):
        judge.score(["q"], ["a"])
