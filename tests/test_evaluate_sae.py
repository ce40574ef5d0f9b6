"""SAE evaluation (`personas.training.evaluate`, `personas eval-sae`) checked against oracles on a tiny model.

Oracles: an identity "SAE" (ReLU codes of [x, -x], decoded back: a perfect reconstruction) recovers all of the
LM loss (CE recovered = 1, EV = 1); an SAE whose decoder is zero recovers none of it (CE recovered = 0); for a random
SAE, explained variance and the spliced loss are recomputed directly, one unpadded sequence at a time, with hooks
written here.
"""

from __future__ import annotations

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
    assert d["n_latents_auroc"] >= 1
    assert 0 <= d["top_style"] <= min(config.top, 64)
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
    import numpy as np
    import pandas as pd

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
    # each equals the dense figures computed from its own site's pooled activations
    y, groups = frame["label"].to_numpy(), frame["question_id"].to_numpy()
    assert real(calls[0], y, groups, config=config) == {k: down["planted"][k] for k in ("dense_diff_means",
                                                                                       "dense_logistic")}
    assert real(calls[1], y, groups, config=config)["dense_logistic"] == down["random"]["dense_logistic"]


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
