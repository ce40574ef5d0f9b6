"""SAE evaluation (`personas.training.evaluate`, `personas eval-sae`) checked against oracles on a tiny model.

Oracles: an identity "SAE" (ReLU codes of [x, -x], decoded back: a perfect reconstruction) recovers all of the
LM loss (CE recovered = 1, EV = 1); an SAE whose decoder is zero recovers none of it (CE recovered = 0); for a random
SAE, explained variance and the spliced loss are recomputed directly, one unpadded sequence at a time, with hooks
written here.
"""

from __future__ import annotations

import numpy as np
import pytest

HOOK = "blocks.0.hook_resid_post"


def _sae(d_in: int, w_enc, w_dec, hook: str = HOOK, model_name: str = "toy"):
    import torch
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    cfg = StandardSAEConfig(d_in=d_in, d_sae=w_enc.shape[1], apply_b_dec_to_input=False,
                            metadata=SAEMetadata(hook_name=hook, model_name=model_name))
    sae = StandardSAE(cfg)
    with torch.no_grad():
        sae.W_enc.copy_(w_enc)
        sae.W_dec.copy_(w_dec)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


@pytest.fixture(scope="module")
def saes(toy_model):
    import torch

    d = toy_model.d_model
    eye = torch.eye(d)
    identity = _sae(d, torch.cat([eye, -eye], 1), torch.cat([eye, -eye], 0), model_name=toy_model.model_id)
    zero = _sae(d, torch.cat([eye, -eye], 1), torch.zeros(2 * d, d), model_name=toy_model.model_id)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(d, 48, generator=g) / d**0.5
    random = _sae(d, w, w.T.contiguous(), model_name=toy_model.model_id)
    with torch.no_grad():
        random.b_enc.fill_(-0.05)
    return {"identity": identity, "zero": zero, "random": random}


@pytest.fixture(scope="module")
def texts(planted_data):
    return [f"{p} {r}" for p, r in zip(planted_data["prompt"][:10], planted_data["response"][:10], strict=True)]


@pytest.fixture(scope="module")
def text_results(toy_model, saes, texts):
    from personas.config import EvalSAEConfig
    from personas.training.evaluate import lm_fit_metrics, text_sequences

    seqs = text_sequences(toy_model, texts)
    metrics, _ = lm_fit_metrics(toy_model, saes, seqs, config=EvalSAEConfig(batch_size=4))
    return seqs, metrics


def test_identity_sae_recovers_all_of_the_loss_and_zero_sae_none(text_results):
    _, m = text_results
    assert m["identity"]["explained_variance"] == pytest.approx(1.0, abs=1e-6)
    assert m["identity"]["ce_recovered"] == pytest.approx(1.0, abs=1e-4)
    assert m["zero"]["ce_recovered"] == pytest.approx(0.0, abs=1e-4)
    assert abs(m["zero"]["ce_zero"] - m["zero"]["ce_clean"]) > 0.01  # the site matters to the loss: the oracle bites
    assert m["random"]["explained_variance"] < 0.99


def test_figures_match_a_direct_unpadded_computation(toy_model, saes, text_results):
    """EV, L0, dead/dense latents and the three losses, recomputed sequence by sequence with our own hooks."""
    import torch

    seqs, m = text_results
    sae = saes["random"]
    special = set(toy_model.tokenizer.all_special_ids)
    xs, nll = [], {"clean": [], "sae": [], "zero": []}
    for t in seqs:
        ids = torch.tensor([t.input_ids])
        keep = torch.tensor([[i not in special for i in t.input_ids]])

        def grab(act, hook, keep=keep):
            xs.append(act[0][keep[0]].detach().clone())

        def splice(how, keep=keep):
            def fn(act, hook):
                act = act.clone()
                x = act[0][keep[0]]
                act[0][keep[0]] = sae.decode(sae.encode(x)) if how == "sae" else torch.zeros_like(x)
                return act
            return fn

        for how, hooks in (("clean", [(HOOK, grab)]), ("sae", [(HOOK, splice("sae"))]), ("zero", [(HOOK, splice("zero"))])):
            with torch.no_grad():
                logits = toy_model.model.run_with_hooks(ids, fwd_hooks=hooks)
            logp = torch.log_softmax(logits[0, :-1].double(), -1)
            nll[how].append(-logp[torch.arange(len(t.input_ids) - 1), ids[0, 1:]][keep[0, 1:]])
    x = torch.cat(xs).double()
    with torch.no_grad():
        codes = sae.encode(x.float())
        recon = sae.decode(codes).double()
    ev = 1 - ((x - recon) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    r = m["random"]
    assert r["n_tokens"] == x.shape[0]
    assert r["explained_variance"] == pytest.approx(float(ev), rel=1e-5)
    assert r["mse"] == pytest.approx(float(((x - recon) ** 2).mean()), rel=1e-5)
    assert r["l0"] == pytest.approx(float((codes != 0).sum(1).double().mean()), rel=1e-6)
    freq = (codes != 0).double().mean(0)
    assert r["dead_fraction"] == pytest.approx(float((freq == 0).double().mean()))
    assert r["dense_fraction"] == pytest.approx(float((freq > 0.1).double().mean()))
    for how, key in (("clean", "ce_clean"), ("sae", "ce_sae"), ("zero", "ce_zero")):
        assert r[key] == pytest.approx(float(torch.cat(nll[how]).mean()), rel=1e-4), key
    assert r["ce_recovered"] == pytest.approx((r["ce_zero"] - r["ce_sae"]) / (r["ce_zero"] - r["ce_clean"]))


def test_evaluate_saes_with_labelled_answers_reports_downstream_figures(toy_model, planted_sae, planted_data):
    """The planted trigger latent must be found: single latent and detector near 1, dense probes too."""
    import pandas as pd

    from personas.config import EvalSAEConfig
    from personas.data import load_responses
    from personas.training.evaluate import evaluate_saes, format_eval_table

    frame = pd.DataFrame({"question": planted_data["prompt"], "response": planted_data["response"],
                          "label": planted_data["label"], "question_id": planted_data["group"]})
    responses = load_responses(frame)
    config = EvalSAEConfig(k=3, selection="auroc", ce_loss=False, dense_C=1.0)
    results = evaluate_saes(toy_model, {"planted": planted_sae}, responses=responses, config=config)
    d = results["planted"]["downstream"]
    assert d["n_questions"] == 4 and d["n_answers"] == len(frame)
    assert d["best_latent_in_sample"]["feature"] == 7
    assert d["single_latent"]["auroc"] > 0.95
    assert d["detector"]["auroc"] > 0.9
    a = results["planted"]["answers"]
    tok = toy_model.tokenizer
    special = set(tok.all_special_ids)
    assert a["n_tokens"] == sum(sum(i not in special for i in tok(r, add_special_tokens=False)["input_ids"])
                                for r in planted_data["response"])
    table = format_eval_table(results)
    assert "AUROC 3-latent detector" in table and "EV (answers)" in table and "CE recovered" not in table
    assert d["k"] == 3 and d["detector_by_k"] == {}
    # the k curve: more detector sizes, each judged the same way (its own row; k itself is not repeated)
    curve = EvalSAEConfig(k=3, k_curve="1, 3,5", selection="auroc", ce_loss=False, dense_C=1.0)
    assert curve.k_curve_list() == [1, 5]
    again = evaluate_saes(toy_model, {"planted": planted_sae}, responses=responses, config=curve)["planted"]
    by_k = again["downstream"]["detector_by_k"]
    assert set(by_k) == {"1", "5"} and again["downstream"]["detector"] == d["detector"]
    assert by_k["5"]["auroc"] > 0.9 and by_k["1"] != by_k["5"]
    table = format_eval_table({"planted": again, "same": results["planted"]})
    assert "AUROC 1-latent detector" in table and "AUROC 5-latent detector" in table
    five = next(line for line in table.splitlines() if line.startswith("AUROC 5-latent"))
    assert f"{by_k['5']['per_question_mean']:.3f} / {by_k['5']['auroc']:.3f} [" in five and five.rstrip().endswith("-")
    assert table.splitlines()[-1].startswith("AUROC cells: mean over held-out questions / pooled")
    for bad in ("0,5", "five", "-1"):
        with pytest.raises(Exception, match="k_curve"):
            EvalSAEConfig(k_curve=bad)


def test_dense_probes_are_fitted_once_per_site_and_belong_to_that_site(toy_model, planted_sae, planted_data, saes,
                                                                       monkeypatch):
    """Two SAEs at one site share its dense figures (fitted once); an SAE at another site gets that site's."""
    import pandas as pd
    import torch

    from personas.config import EvalSAEConfig
    from personas.data import load_responses
    from personas.training import evaluate

    frame = pd.DataFrame({"question": planted_data["prompt"], "response": planted_data["response"],
                          "label": planted_data["label"], "question_id": planted_data["group"]})
    responses = load_responses(frame)
    calls: list[np.ndarray] = []
    real = evaluate.dense_probe_metrics

    def counted(dense, y, groups, *, config=None):
        calls.append(np.asarray(dense).copy())
        return real(dense, y, groups, config=config)

    monkeypatch.setattr(evaluate, "dense_probe_metrics", counted)
    config = EvalSAEConfig(k=3, selection="auroc", ce_loss=False, dense_C=1.0)
    results = evaluate.evaluate_saes(toy_model, {"planted": planted_sae, "identity": saes["identity"],
                                                 "random": saes["random"]}, responses=responses, config=config)
    assert len(calls) == 2  # blocks.0.hook_resid_pre and blocks.0.hook_resid_post
    assert not np.allclose(calls[0], calls[1])
    down = {name: r["downstream"] for name, r in results.items()}
    for key in ("dense_logistic", "dense_diff_means"):
        assert down["identity"][key] == down["random"][key]
        assert down["planted"][key] != down["identity"][key]
    # each is the leave-one-question-out AUROC of its own site's mean-pooled answer activations, captured and
    # fitted here by hand: the class-mean difference, and scikit-learn's balanced logistic model at C = 1
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    from personas.capturing import tokenize_conversations

    y, groups = frame["label"].to_numpy(), frame["question_id"].to_numpy().astype(str)
    special = set(toy_model.tokenizer.all_special_ids)
    sequences = tokenize_conversations(toy_model, planted_data["prompt"], planted_data["response"])
    for name, hook in (("planted", "blocks.0.hook_resid_pre"), ("random", "blocks.0.hook_resid_post")):
        pooled = []
        for t in sequences:
            _, cache = toy_model.model.run_with_cache(torch.tensor([t.input_ids]), names_filter=[hook])
            keep = [p for p in range(t.start, t.end) if t.input_ids[p] not in special]
            pooled.append(cache[hook][0, keep].mean(0).numpy())  # float32, as the capture pools
        X = np.stack(pooled).astype(np.float64)
        by_hand = {"dense_diff_means": np.zeros(len(y)), "dense_logistic": np.zeros(len(y))}
        for g in np.unique(groups):
            tr, te = groups != g, groups == g
            diff = X[tr][y[tr] == 1].mean(0) - X[tr][y[tr] == 0].mean(0)
            by_hand["dense_diff_means"][te] = X[te] @ diff
            scaler = StandardScaler().fit(X[tr])
            model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000)
            by_hand["dense_logistic"][te] = model.fit(scaler.transform(X[tr]), y[tr]).decision_function(
                scaler.transform(X[te]))
        # within two of the (misaligned, aligned) pairs: answers with the same tokens tie, and float32 pooling in
        # padded batches can break a tie either way
        pairs = int(y.sum()) * int((1 - y).sum())
        for key, scores in by_hand.items():
            assert down[name][key]["auroc"] == pytest.approx(roc_auc_score(y, scores), abs=2 / pairs), (name, key)


def test_bad_inputs_are_explained(toy_model, saes):
    from personas.config import EvalSAEConfig
    from personas.errors import PersonasError, SiteMismatchError
    from personas.training.evaluate import evaluate_saes

    with pytest.raises(PersonasError, match="needs texts"):
        evaluate_saes(toy_model, saes)
    import torch

    wrong = _sae(toy_model.d_model, torch.eye(toy_model.d_model), torch.eye(toy_model.d_model), hook="blocks.9.hook_resid_post")
    with pytest.raises(PersonasError, match="blocks.9"):
        evaluate_saes(toy_model, {"wrong": wrong}, texts=["hurt them"])
    with pytest.raises(PersonasError, match="dense_threshold"):
        EvalSAEConfig(dense_threshold=1.5)
    del SiteMismatchError


def test_eval_sae_command_prints_saes_side_by_side(tmp_path, toy_tokenizer, texts, capsys):
    import json

    import torch

    from personas.cli.main import main
    from personas.testing import save_toy_hf_model

    folder = save_toy_hf_model(tmp_path / "model", toy_tokenizer, d_model=32, n_layers=2)
    eye = torch.eye(32)
    _sae(32, torch.cat([eye, -eye], 1), torch.cat([eye, -eye], 0)).save_model(str(tmp_path / "identity"))
    _sae(32, torch.cat([eye, -eye], 1), torch.zeros(64, 32)).save_model(str(tmp_path / "zero"))
    (tmp_path / "docs.txt").write_text("\n".join(texts[:6]) + "\n")
    out = tmp_path / "eval.json"
    argv = ["eval-sae", str(tmp_path / "identity"), str(tmp_path / "zero"), "--model", str(folder), "--text",
            str(tmp_path / "docs.txt"), "--out", str(out), "--allow-model-mismatch", "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    header = printed.splitlines()[0]
    assert "identity" in header and "zero" in header and "CE recovered (text)" in printed
    results = json.loads(out.read_text())["results"]
    assert results["identity"]["text"]["ce_recovered"] == pytest.approx(1.0, abs=1e-4)
    assert results["zero"]["text"]["ce_recovered"] == pytest.approx(0.0, abs=1e-4)
    assert results["identity"]["text"]["n_texts"] == 6

    assert main([*argv[:5], "--text", str(tmp_path / "missing.txt")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing.txt" in err and "one document per line" in err


def test_eval_sae_job_refuses_a_wrong_sae_before_loading_the_model(monkeypatch, tmp_path):
    from personas.errors import PersonasError
    from personas.jobs import eval_sae

    def no_model(*args, **kwargs):
        raise AssertionError("the model loaded before the SAE specs were checked")

    monkeypatch.setattr(eval_sae, "load_model", no_model)
    (tmp_path / "docs.txt").write_text("one document\n")
    with pytest.raises(PersonasError, match="neither a folder, a shipped SAE's name"):
        eval_sae.eval_sae_job(["no-such-sae"], text=tmp_path / "docs.txt")


def _question_specific_answers(seed: int = 0):
    """Answers to 4 questions, 40 each (20 misaligned), 3 tokens each, coded by 12 latents: latent g separates the
    classes perfectly within question g and is a coin flip in the other questions; latents 4-11 are noise. Latents
    0 and 1 fire on the first token, always token id 7 (all their mass on one token: style-flagged); the rest fire
    on tokens of varied ids. Held out, a question's answers are at chance for anything fitted on the other three."""
    import scipy.sparse

    rng = np.random.default_rng(seed)
    n_q, per, length, n_latents = 4, 40, 3, 12
    groups = np.repeat([f"q{g}" for g in range(n_q)], per)
    y = np.tile(np.r_[np.ones(per // 2), np.zeros(per // 2)], n_q).astype(int)
    codes = np.zeros((n_q * per * length, n_latents))
    token_ids = rng.integers(10, 60, size=n_q * per * length)
    token_ids[::length] = 7
    for i in range(n_q * per):
        g, rows = i // per, slice(i * length, (i + 1) * length)
        for h in range(n_q):
            if (h == g and y[i] == 1) or (h != g and rng.random() < 0.5):
                codes[rows][0 if h < 2 else 1 + h % 2, h] = 1.0
        for h in range(n_q, n_latents):
            if rng.random() < 0.5:
                codes[rows][rng.integers(0, length), h] = rng.uniform(0.5, 1.5)
    offsets = np.arange(0, n_q * per * length + 1, length)
    pooled = codes.reshape(n_q * per, length, n_latents).mean(1)
    return pooled, y, groups, scipy.sparse.csr_matrix(codes), offsets, token_ids


def test_downstream_figures_fit_on_the_training_questions_only():
    """Every leave-one-question-out figure is at chance when each held-out question's answers are at chance for
    whatever the other questions teach (a fit that saw the held-out rows finds its question's own latent); the
    in-sample counts match a direct computation."""
    from sklearn.metrics import roc_auc_score

    from personas.config import EvalSAEConfig
    from personas.training.evaluate import downstream_metrics

    pooled, y, groups, codes, offsets, token_ids = _question_specific_answers()
    for g in range(4):  # the planted signal is there: latent g separates question g's answers perfectly
        rows = groups == f"q{g}"
        assert roc_auc_score(y[rows], pooled[rows, g]) == 1.0
    config = EvalSAEConfig(k=4, selection="auroc", dense_C=1.0, top=4, auroc_threshold=0.6)
    d = downstream_metrics(pooled, pooled, y, groups, codes=codes, offsets=offsets, token_ids=token_ids,
                           config=config)
    for key in ("detector", "single_latent", "dense_diff_means", "dense_logistic"):
        assert d[key]["per_question_mean"] < 0.65 and d[key]["auroc"] < 0.65, (key, d[key])  # a leak: 0.68-0.82
    # in-sample: AUROC over all answers by scikit-learn, the top latents by |AUROC - 0.5|, and the style flags by
    # hand (equal lengths and no punctuation: a latent is flagged when one token id carries > half its mass)
    auc = np.array([roc_auc_score(y, pooled[:, j]) for j in range(pooled.shape[1])])
    assert d["n_latents_auroc"] == int((np.maximum(auc, 1 - auc) >= 0.6).sum())
    top = np.argsort(-np.abs(auc - 0.5), kind="stable")[:4]
    assert sorted(d["top_features"]) == sorted(top.tolist())
    dense = codes.toarray()
    share = [max(dense[token_ids == t, j].sum() for t in np.unique(token_ids)) / dense[:, j].sum() for j in top]
    assert d["top_style"] == sum(s > 0.5 for s in share)
    assert 0 < d["top_style"] < len(top)  # some flagged, some not: the count is not a constant
