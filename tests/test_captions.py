"""CaptionFile: user caption JSONL looked up by (sequence, first frame) or clip name; unused keys reported."""

import json

import pytest

from one4d.data.captions import CaptionFile


def _write(path, lines):
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def test_lookup_by_segment_and_by_clip_name_and_unused_keys(tmp_path):
    path = _write(tmp_path / "captions.jsonl", [
        {"sequence": "seq_a", "first": 0, "caption": "a dog runs"},
        {"sequence": "seq_a", "first": 81, "caption": "the dog sits"},
        "",
        {"clip": "seq_b_000000", "caption": "a street at night"},
        {"clip": "typo_clip", "caption": "never used"},
    ])
    captions = CaptionFile(path)
    assert len(captions) == 4
    assert captions.lookup("seq_a", 0, "seq_a_000000") == "a dog runs"
    assert captions.lookup("seq_b", 0, "seq_b_000000") == "a street at night"
    assert captions.lookup("seq_a", 40, "seq_a_000040") is None  # another first frame is another segment
    assert captions.unused_keys() == ["clip=typo_clip", "sequence=seq_a first=81"]
    captions.lookup("seq_a", 81, "x")
    assert captions.unused_keys() == ["clip=typo_clip"]


def test_clip_name_wins_over_segment(tmp_path):
    path = _write(tmp_path / "c.jsonl", [
        {"sequence": "s", "first": 0, "caption": "by segment"},
        {"clip": "s_000000", "caption": "by clip"},
    ])
    captions = CaptionFile(path)
    assert captions.lookup("s", 0, "s_000000") == "by clip"
    assert captions.unused_keys() == []


@pytest.mark.parametrize("bad, problem", [
    ("{not json", "not valid JSON"),
    (json.dumps({"sequence": "s", "first": 0}), "caption"),
    (json.dumps({"sequence": "s", "first": "0", "caption": "x"}), "first"),
    (json.dumps({"caption": "x"}), "clip"),
    (json.dumps({"sequence": "s", "first": 0, "caption": "again"}), "earlier line"),
])
def test_malformed_line_names_file_and_line(tmp_path, bad, problem):
    path = _write(tmp_path / "bad.jsonl", [{"sequence": "s", "first": 0, "caption": "ok"}, bad])
    with pytest.raises(ValueError, match=rf"bad\.jsonl line 2: .*{problem}"):
        CaptionFile(path)


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        CaptionFile(tmp_path / "nope.jsonl")
