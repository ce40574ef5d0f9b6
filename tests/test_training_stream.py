"""Streaming SAE training (`personas.training.stream`): chunks captured while training, checkpoints, exact resume."""

from __future__ import annotations

import pytest

HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def sequences(toy_model, planted_data):
    tok = toy_model.tokenizer
    texts = [f"{p} {r}" for p, r in zip(planted_data["prompt"], planted_data["response"], strict=True)]
    ids = [[tok.bos_token_id, *tok(t, add_special_tokens=False)["input_ids"]] for t in texts]
    return ids[:-8], ids[-8:]


def _config(**kw):
    from personas.config import TrainSAEConfig

    base = dict(d_sae=32, k=4, n_tokens=2048, batch_size_tokens=128, lr=3e-3, seed=0, stream=True, chunk_tokens=400)
    return TrainSAEConfig(**{**base, **kw})


def _weights(sae):
    return {k: v.detach().clone() for k, v in sae.state_dict().items()}


def test_capture_rows_matches_token_activations(toy_model, planted_data):
    import torch

    from personas.capturing import token_activations
    from personas.training.stream import capture_rows

    texts = planted_data["response"][:5]
    tok = toy_model.tokenizer
    ids = [[tok.bos_token_id, *tok(t, add_special_tokens=False)["input_ids"]] for t in texts]
    rows = capture_rows(toy_model, ids, HOOK, batch_size=2)
    assert torch.allclose(rows, token_activations(toy_model, texts, HOOK, progress=False), atol=1e-5)


def test_a_killed_run_resumes_to_the_same_weights(toy_model, sequences, tmp_path, monkeypatch):
    import torch

    from personas.training import stream

    train, held = sequences
    config = _config()
    sae_a, metrics = stream.train_sae_streaming(toy_model, train, hook_name=HOOK, config=config,
                                                checkpoint_dir=tmp_path / "a", eval_sequences=held, progress=False)
    assert metrics["n_training_samples"] == 2048 and metrics["chunks"] >= 3  # several chunks, so resume is tested
    assert metrics["l0"] <= 4 + 1e-6 and metrics["explained_variance"] > 0.1  # 2k samples: a sanity bound

    # a stretch of 2 chunks, then a crash while capturing a later chunk, then a resume to the end
    stopped, state = stream.train_sae_streaming(toy_model, train, hook_name=HOOK, config=_config(max_chunks=2),
                                                checkpoint_dir=tmp_path / "b", eval_sequences=held, progress=False)
    assert stopped is None and state["stopped_at_chunk"] == 2
    real, calls = stream.capture_rows, []

    def dies_on_second_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(stream, "capture_rows", dies_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        stream.train_sae_streaming(toy_model, train, hook_name=HOOK, config=config, checkpoint_dir=tmp_path / "b",
                                   eval_sequences=held, progress=False)
    monkeypatch.setattr(stream, "capture_rows", real)
    sae_b, metrics_b = stream.train_sae_streaming(toy_model, train, hook_name=HOOK, config=config,
                                                  checkpoint_dir=tmp_path / "b", eval_sequences=held, progress=False)
    a, b = _weights(sae_a), _weights(sae_b)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert metrics_b["explained_variance"] == metrics["explained_variance"]

    with pytest.raises(Exception, match="belongs to another run"):
        stream.train_sae_streaming(toy_model, train, hook_name=HOOK, config=_config(k=5, max_chunks=1),
                                   checkpoint_dir=tmp_path / "b", eval_sequences=held, progress=False)


def test_a_row_cache_serves_a_second_run_without_capturing(toy_model, sequences, tmp_path, monkeypatch):
    import torch

    from personas.training import stream

    train, held = sequences
    rows = tmp_path / "rows"
    sae_a, metrics_a = stream.train_sae_streaming(toy_model, train, hook_name=HOOK, config=_config(), eval_sequences=held,
                                                  progress=False, row_cache=rows)
    kept = sorted(p.name for p in rows.glob("chunk-*.pt"))
    assert len(kept) == metrics_a["chunks"] >= 3 and metrics_a["chunks_read_from_row_cache"] == 0
    first = torch.load(rows / kept[0], weights_only=True)
    assert first.dtype == torch.float16 and first.shape[1] == toy_model.d_model

    # the kept rows are chunk 0's capture, shuffled: the same multiset of tokens as a fresh capture of that chunk
    plan = stream.StreamPlan(len(train), sum(map(len, train)) / len(train), 400, 0)
    fresh = stream.capture_rows(toy_model, [train[j] for j in plan.chunk(0)], HOOK).to(torch.float16)
    assert torch.equal(torch.sort(first.float().sum(1)).values, torch.sort(fresh.float().sum(1)).values)

    real = stream.capture_rows

    def no_capture(*args, **kwargs):
        raise AssertionError("captured although the row cache holds the chunk")

    monkeypatch.setattr(stream, "capture_rows", no_capture)
    sae_b, metrics_b = stream.train_sae_streaming(toy_model, train, hook_name=HOOK, config=_config(),
                                                  eval_sequences=held, progress=False, row_cache=rows)
    assert metrics_b["chunks_read_from_row_cache"] == metrics_b["chunks"]
    for name, value in _weights(sae_a).items():  # rows trained at their float16 values either way
        assert torch.equal(value, _weights(sae_b)[name]), name
    (rows / kept[1]).write_bytes(b"truncated")  # a damaged chunk file is captured again, not a traceback
    monkeypatch.setattr(stream, "capture_rows", real)
    sae_c, metrics_c = stream.train_sae_streaming(toy_model, train, hook_name=HOOK, config=_config(),
                                                  eval_sequences=held, progress=False, row_cache=rows)
    assert metrics_c["chunks_read_from_row_cache"] == metrics_c["chunks"] - 1
    for name, value in _weights(sae_a).items():
        assert torch.equal(value, _weights(sae_c)[name]), name
    monkeypatch.setattr(stream, "capture_rows", no_capture)
    other_k, _ = stream.train_sae_streaming(toy_model, train, hook_name=HOOK, config=_config(k=6),
                                            eval_sequences=held, progress=False, row_cache=rows)
    assert other_k.cfg.k == 6  # a grid cell with other SAE settings reads the same rows
    monkeypatch.setattr(stream, "capture_rows", real)
    with pytest.raises(Exception, match="holds another capture"):
        stream.train_sae_streaming(toy_model, train, hook_name=HOOK, config=_config(chunk_tokens=500),
                                   eval_sequences=held, progress=False, row_cache=rows)
    without, _ = stream.train_sae_streaming(toy_model, train, hook_name=HOOK, config=_config(), eval_sequences=held,
                                            progress=False)
    assert any(not torch.equal(v, _weights(without)[n]) for n, v in _weights(sae_a).items())  # float16 rows differ


def test_train_sae_command_streams_in_stretches_at_bfloat16(tmp_path, toy_tokenizer, planted_data, capsys):
    import json

    from personas.cli.main import main
    from personas.saes import load_sae
    from personas.testing import save_toy_hf_model

    folder = save_toy_hf_model(tmp_path / "tiny", toy_tokenizer, seed=5, d_model=32)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(planted_data["response"]))
    out = tmp_path / "sae"
    argv = ["train-sae", "--model", str(folder), "--hook", "blocks.0.hook_resid_post", "--out", str(out), "--corpus",
            str(corpus), "--d-sae", "32", "--k", "4", "--n-tokens", "1024", "--batch-size-tokens", "128",
            "--chunk-tokens", "300", "--stream", "--capture-dtype", "bfloat16", "--eval-fraction", "0.1", "--quiet"]
    assert main([*argv, "--max-chunks", "1"]) == 0
    assert "run the same command again to resume" in capsys.readouterr().out
    assert (tmp_path / "sae-checkpoint" / "checkpoint.pt").is_file() and not out.exists()
    assert main(argv) == 0
    assert not (tmp_path / "sae-checkpoint").exists()
    sae = load_sae(str(out))
    assert sae.cfg.dtype == "float32" and sae.cfg.d_sae == 32
    training = json.loads((out / "training.json").read_text())
    assert training["metrics"]["streamed"] and training["metrics"]["n_training_samples"] == 1024
    assert training["provenance"]["model"]["dtype"] == "bfloat16"
    assert training["provenance"]["corpus"]["n_heldout_documents"] == 8
