"""User caption files: JSONL with one caption per clip, looked up during conversion (issue 14, item 5).

Each line is one JSON object, keyed either by the source sequence and its first frame or by the
clip folder's name:

    {"sequence": "scene_01", "first": 0, "caption": "a man walks through a corridor"}
    {"clip": "scene_01_000081", "caption": "the camera pans over a street"}

Captions come, in order, from the dataset's own text, then this file (``captions=FILE``), then the
VLM command ``scripts/caption_clips.py`` run over the converted clips. Keys that are never looked
up are reported by :meth:`CaptionFile.unused_keys` (a typo in a sequence name would otherwise
silently leave clips uncaptioned).
"""

from __future__ import annotations

import json
from pathlib import Path


class CaptionFile:
    """Captions of a JSONL file, looked up by (sequence, first frame) or by clip folder name."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"caption file {self.path} does not exist; pass captions=<a JSONL file> or leave it unset")
        self.by_segment: dict[tuple[str, int], str] = {}
        self.by_clip: dict[str, str] = {}
        self._used: set[str] = set()
        for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                self._add(number, line)

    def _add(self, number: int, line: str) -> None:
        """Parse one line; any problem is one ValueError naming the file and the line number."""
        where = f"{self.path} line {number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}: not valid JSON ({error.msg}); each line must be one JSON object") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("caption"), str):
            raise ValueError(f"{where}: each line needs a string \"caption\" and either \"clip\" or \"sequence\" + \"first\"")
        if "clip" in entry:
            if not isinstance(entry["clip"], str) or "sequence" in entry:
                raise ValueError(f"{where}: \"clip\" must be a clip folder name and not be combined with \"sequence\"")
            key, table, lookup = entry["clip"], self.by_clip, entry["clip"]
        elif "sequence" in entry:
            first = entry.get("first")
            if not isinstance(entry["sequence"], str) or not isinstance(first, int) or isinstance(first, bool) or first < 0:
                raise ValueError(f"{where}: \"sequence\" must be a string and \"first\" a frame index >= 0 (an integer)")
            key, table, lookup = self._segment_name(entry["sequence"], first), self.by_segment, (entry["sequence"], first)
        else:
            raise ValueError(f"{where}: each line needs \"clip\" or \"sequence\" + \"first\" next to \"caption\"")
        if lookup in table:
            raise ValueError(f"{where}: {key} has a caption already (an earlier line); keep one line per clip")
        table[lookup] = entry["caption"]

    @staticmethod
    def _segment_name(sequence: str, first: int) -> str:
        return f"sequence={sequence} first={first}"

    def __len__(self) -> int:
        return len(self.by_segment) + len(self.by_clip)

    def lookup(self, sequence: str, first: int, clip_name: str) -> str | None:
        """The caption of a clip cut from ``sequence`` at frame ``first`` and named ``clip_name``, or None.

        A clip-name entry wins over a sequence entry when a file holds both for the same clip.
        Both keys count as used when found.
        """
        caption = None
        segment = (sequence, int(first))
        if segment in self.by_segment:
            self._used.add(self._segment_name(*segment))
            caption = self.by_segment[segment]
        if clip_name in self.by_clip:
            self._used.add(f"clip={clip_name}")
            caption = self.by_clip[clip_name]
        return caption

    def unused_keys(self) -> list[str]:
        """Keys never looked up, sorted ("sequence=S first=N" or "clip=NAME"), for the conversion report."""
        keys = [self._segment_name(*segment) for segment in self.by_segment] + [f"clip={name}" for name in self.by_clip]
        return sorted(key for key in keys if key not in self._used)
