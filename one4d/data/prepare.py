"""One conversion run (``scripts/prepare_data.py``): a dataset download -> a root of training clips.

1. list the source's sequences and plan the segments (``one4d.data.cutter.plan_segments``), in a fixed order;
2. caption each segment: the dataset's own text, else the user's file (``captions=``), else "";
3. resume: clips already renamed into place are kept, ``.<clip>.partial`` folders of a killed run removed;
4. convert the rest in worker processes (spawn; one torch/OpenCV thread each, so results do not depend on the
   worker count), with a progress bar of clips/s and frames/s; a segment that cannot be read is skipped with
   its reason and the run goes on;
5. write ``out/index.jsonl`` (one line per clip, in plan order) and ``out/report.md`` from the clips' meta.json,
   each through a temporary file and a rename; both are the same for a resumed run as for an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from one4d.data.clip import ClipError, read_meta, write_text_atomic
from one4d.data.cutter import (PARTIAL_PREFIX, PARTIAL_SUFFIX, CutSettings, SegmentError, cut_segment, plan_segments,
                               segment_frames, write_cut_clip)
from one4d.data.selfcheck import ERROR_THRESHOLD, OUTLIER_THRESHOLD
from one4d.data.sources import FrameReadError, SequenceInfo, get_source, source_names
from one4d.runtime import available_cpus, raise_if_stopped

INDEX_NAME, REPORT_NAME = "index.jsonl", "report.md"


@dataclass
class Segment:
    """One planned clip."""

    sequence: SequenceInfo
    first: int
    stride: int
    name: str
    caption: str = ""
    caption_from: str = "none"  # dataset | file | none


@dataclass
class RunSettings:
    """A conversion's settings, checked at the boundary (:func:`settings_from_config`)."""

    source: str
    root: Path
    out: Path
    options: dict
    cut: CutSettings
    stride: int
    fps: float | None = None  # target frame rate: stride = round(sequence fps / fps) where the sequence states one
    workers: int | None = None
    limit: int | None = None
    captions: str | None = None
    error_threshold: float = ERROR_THRESHOLD
    outlier_threshold: float = OUTLIER_THRESHOLD
    progress: bool = True


def clip_name(sequence: str, first: int) -> str:
    """Folder name of the clip starting at ``first`` of ``sequence`` (its '/' become '__': one flat root)."""
    return f"{sequence.replace('/', '__').replace(os.sep, '__')}_{first:06d}"


def source_argument_problem(arguments: list[str]) -> str | None:
    """The problem with the command line's ``source=`` (missing or unknown), listing the known sources, or None.

    Checked before Hydra composes the config, whose own error for an unknown config group option is a traceback.
    ``--help`` needs a source too (the config group has no default), so it is checked the same way.
    """
    names = source_names()
    values = [argument.split("=", 1)[1] for argument in arguments if argument.startswith("source=")]
    if not values:
        return f"source= is required; known sources: {', '.join(names)}"
    if values[-1] not in names:
        return f"unknown source {values[-1]!r}; known sources: {', '.join(names)}"
    return None


def _positive_int(config, key: str, allow_none: bool = False):
    value = config.get(key)
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key} must be a positive whole number, got {value!r}")
    return value


def settings_from_config(config) -> RunSettings:
    """The run's settings from the composed Hydra config; a bad value is one ValueError line."""
    from omegaconf import OmegaConf

    source = config.source
    if config.get("root") in (None, "???") or config.get("out") in (None, "???"):
        raise ValueError("root= (the dataset as downloaded) and out= (the clip root to write) are both required")
    root, out = Path(str(config.root)).expanduser().resolve(), Path(str(config.out)).expanduser().resolve()
    if out == root or root in out.parents:
        raise ValueError(f"out={config.out} is inside root={config.root}; write the clips outside the download")
    far = source.get("far_depth")
    if far is not None and (not isinstance(far, (int, float)) or far <= 0):
        raise ValueError(f"source.far_depth must be a positive number of metres or null, got {far!r}")
    stride = config.get("stride") if config.get("stride") is not None else source.get("stride", 1)
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be a positive whole number, got {stride!r}")
    fps = config.get("fps")
    if fps is not None and (not isinstance(fps, (int, float)) or fps <= 0):
        raise ValueError(f"fps must be a positive frame rate or null, got {fps!r}")
    if config.get("rgb_format", "mp4") not in ("mp4", "png"):
        raise ValueError(f"rgb_format must be mp4 or png, got {config.rgb_format!r}")
    if config.get("layout", "full") not in ("full", "depth"):
        raise ValueError(f"layout must be full or depth, got {config.layout!r}")
    cut = CutSettings(num_frames=_positive_int(config, "num_frames"), height=_positive_int(config, "height"),
                      width=_positive_int(config, "width"), far_depth=None if far is None else float(far),
                      rgb_format=config.get("rgb_format", "mp4"), crf=int(config.get("crf", 0)),
                      layout=config.get("layout", "full"))
    thresholds = config.get("selfcheck", {})
    return RunSettings(
        source=str(source.name), root=root, out=out,
        options=OmegaConf.to_container(source.options, resolve=True) if source.get("options") is not None else {},
        cut=cut, stride=stride, fps=None if fps is None else float(fps),
        workers=_positive_int(config, "workers", allow_none=True), limit=_positive_int(config, "limit", allow_none=True),
        captions=None if config.get("captions") is None else str(config.captions),
        error_threshold=float(thresholds.get("error_threshold", ERROR_THRESHOLD)),
        outlier_threshold=float(thresholds.get("outlier_threshold", OUTLIER_THRESHOLD)),
        progress=bool(config.get("progress", True)),
    )


def _check_out(out: Path) -> None:
    """Create ``out`` and make sure this process can write there (one line otherwise)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f"{PARTIAL_PREFIX}write-test{PARTIAL_SUFFIX}"
        probe.mkdir(exist_ok=True)
        probe.rmdir()
    except OSError as error:
        raise ValueError(f"cannot write to out={out} ({error.strerror or error}); choose a writable folder") from None


def _caption_file(path: str | None):
    """The user's caption file (one4d.data.captions.CaptionFile), or None."""
    if path is None:
        return None
    from one4d.data.captions import CaptionFile

    return CaptionFile(path)


def plan(source, settings: RunSettings, captions) -> tuple[list[Segment], list[tuple[str, str]]]:
    """Every segment to convert, in sequence order then first frame, and the sequences skipped with the reason."""
    segments, skipped = [], []
    for sequence in source.sequences():
        if sequence.problem:
            skipped.append((sequence.name, sequence.problem))
            continue
        stride = settings.stride
        if settings.fps is not None and sequence.fps:
            stride = max(1, round(sequence.fps / settings.fps))
        firsts = plan_segments(sequence.num_frames, settings.cut.num_frames, stride)
        if not firsts:
            needed = (settings.cut.num_frames - 1) * stride + 1
            skipped.append((sequence.name, f"{sequence.num_frames} frames, a clip needs {needed} (num_frames={settings.cut.num_frames}, stride={stride})"))
        segments += [Segment(sequence, first, stride, clip_name(sequence.name, first)) for first in firsts]
    if settings.limit is not None:
        segments = segments[:settings.limit]
    for segment in segments:  # after the limit: a caption file's keys for clips not made stay unused
        text = source.caption(segment.sequence, segment.first, (settings.cut.num_frames - 1) * segment.stride + 1)
        segment.caption_from = "dataset"
        if text is None and captions is not None:
            text, segment.caption_from = captions.lookup(segment.sequence.name, segment.first, segment.name), "file"
        if text is None:
            text, segment.caption_from = "", "none"
        segment.caption = text
    return segments, skipped


# ----------------------------------------------------------------------------- workers

_WORKER: dict = {}


def _start_worker(source_name: str, root: str, options: dict, cut: CutSettings, out: str) -> None:
    """Per worker process: one thread for torch and OpenCV (processes give the parallelism, and results stay
    independent of the worker count), and the source opened once."""
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    _WORKER.update(source=get_source(source_name)(root, **options), cut=cut, out=Path(out), source_name=source_name)


def _convert(segment: Segment) -> dict:
    """Convert one segment in a worker: {"name", "written", "reason", "frames", "seconds"}."""
    source, cut, out = _WORKER["source"], _WORKER["cut"], _WORKER["out"]
    frames = segment_frames(segment.first, cut.num_frames, segment.stride)
    fps = segment.sequence.fps / segment.stride if segment.sequence.fps else None
    meta = {"source": _WORKER["source_name"], "sequence": segment.sequence.name, "first": segment.first,
            "stride": segment.stride, "frames": [frames[0], frames[-1]], "caption": segment.caption,
            "caption_source": segment.caption_from, "native_fps": segment.sequence.fps}
    if fps is not None:
        meta["fps"] = fps
    try:
        clip = cut_segment(source, segment.sequence, frames, cut)
        written = write_cut_clip(out / segment.name, clip, meta, cut)
    except (SegmentError, FrameReadError) as error:
        return {"name": segment.name, "written": False, "reason": str(error), "frames": 0, "seconds": {}}
    return {"name": segment.name, "written": True, "reason": None, "frames": cut.num_frames,
            "seconds": {**clip.seconds, **written["seconds"]}}


def _run_pending(pending: list[Segment], settings: RunSettings) -> list[dict]:
    """Convert ``pending`` (in-process for one worker, else spawned worker processes) with a tqdm bar; results in
    any order."""
    from tqdm import tqdm

    workers = min(settings.workers or available_cpus(), max(len(pending), 1))
    arguments = (settings.source, str(settings.root), settings.options, settings.cut, str(settings.out))
    bar = tqdm(total=len(pending), unit="clip", disable=not settings.progress or not pending, file=sys.stderr,
               dynamic_ncols=True, smoothing=0.1)
    results, frames, start = [], 0, time.perf_counter()

    def record(result: dict) -> None:
        nonlocal frames
        results.append(result)
        frames += result["frames"]
        bar.update(1)
        bar.set_postfix_str(f"{frames / max(time.perf_counter() - start, 1e-9):.1f} frames/s, "
                            f"{sum(not r['written'] for r in results)} skipped", refresh=False)

    try:
        if workers == 1:
            _start_worker(*arguments)
            for segment in pending:
                raise_if_stopped()
                record(_convert(segment))
        else:
            # spawn: torch and fork do not mix. An executor rather than multiprocessing.Pool: a worker killed (out of
            # memory) raises BrokenProcessPool instead of leaving the run waiting forever; the next run resumes.
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=arguments) as executor:
                futures = [executor.submit(_convert, segment) for segment in pending]
                try:
                    for future in as_completed(futures):
                        raise_if_stopped()
                        record(future.result())
                except BaseException:
                    executor.shutdown(wait=False, cancel_futures=True)
                    raise
    finally:
        bar.close()
    return results


# ----------------------------------------------------------------------------- the run


def _finished(folder: Path, segment: Segment, cut: CutSettings) -> dict | None:
    """meta.json of a clip a previous run finished, or None; a clip made with other settings is one error line."""
    if not folder.is_dir():
        return None
    try:
        meta = read_meta(folder)
    except ClipError:
        return None  # only the rename makes a clip folder: a clip without meta.json is not ours to judge
    expected = {"num_frames": cut.num_frames, "height": cut.height, "width": cut.width, "stride": segment.stride,
                "first": segment.first, "sequence": segment.sequence.name, "layout": cut.layout}
    found = {key: meta.get(key, "full" if key == "layout" else None) for key in expected}
    if found != expected:
        different = ", ".join(f"{key} {found[key]!r} (now {expected[key]!r})" for key in expected if found[key] != expected[key])
        raise ValueError(f"{folder} was converted with other settings: {different}; use another out= or remove it")
    return meta


def prepare(settings: RunSettings) -> dict:
    """Convert the dataset; returns the summary (clips, skipped, seconds). Bad input raises a one-line ValueError
    before any clip is written."""
    try:
        source = get_source(settings.source)(settings.root, **settings.options)  # SourceLayoutError: not this dataset
    except TypeError as error:  # a misspelt or unknown source.options key
        raise ValueError(f"source.options: {error}; configs/source/{settings.source}.yaml lists the options") from None
    captions = _caption_file(settings.captions)
    _check_out(settings.out)
    started = time.perf_counter()
    segments, skipped_sequences = plan(source, settings, captions)
    if not segments and not skipped_sequences:
        raise ValueError(f"root={settings.root} holds no {settings.source} sequence (see data/sources.md, section '{settings.source}')")

    for partial in settings.out.glob(f"{PARTIAL_PREFIX}*{PARTIAL_SUFFIX}"):  # left by a killed run: redo
        shutil.rmtree(partial, ignore_errors=True)
    done = {segment.name for segment in segments if _finished(settings.out / segment.name, segment, settings.cut)}
    pending = [segment for segment in segments if segment.name not in done]
    results = {result["name"]: result for result in _run_pending(pending, settings)}

    entries, skipped_segments, seconds = [], [], {}
    for segment in segments:
        result = results.get(segment.name)
        if result is not None and not result["written"]:
            skipped_segments.append((segment, result["reason"]))
            continue
        for key, value in (result or {}).get("seconds", {}).items():
            seconds[key] = seconds.get(key, 0.0) + value
        meta = read_meta(settings.out / segment.name)
        entries.append(_index_entry(segment, meta, settings))
    write_text_atomic(settings.out / INDEX_NAME, "".join(json.dumps(entry) + "\n" for entry in entries))
    unused = captions.unused_keys() if captions is not None else []
    write_text_atomic(settings.out / REPORT_NAME, _report(settings, segments, entries, skipped_sequences, skipped_segments, unused))
    return {"clips": len(entries), "converted": sum(r["written"] for r in results.values()), "kept": len(done),
            "skipped_segments": len(skipped_segments), "skipped_sequences": len(skipped_sequences),
            "flagged": sum(entry["flagged"] for entry in entries), "frames": sum(r["frames"] for r in results.values()),
            "seconds": time.perf_counter() - started, "stage_seconds": seconds}


def _index_entry(segment: Segment, meta: dict, settings: RunSettings) -> dict:
    """One index.jsonl line, from the clip's meta.json (so a resumed run writes the same line)."""
    error, outliers = meta.get("selfcheck_error"), meta.get("selfcheck_outliers")
    flagged = (error is not None and error > settings.error_threshold) or (outliers is not None and outliers > settings.outlier_threshold)
    return {"clip": segment.name, "source": meta.get("source"), "sequence": segment.sequence.name, "first": segment.first,
            "stride": segment.stride, "num_frames": meta["num_frames"], "height": meta["height"], "width": meta["width"],
            "fps": meta.get("fps"), "caption": meta.get("caption", ""), "selfcheck_error": error,
            "selfcheck_outliers": outliers, "flagged": bool(flagged)}


def _distribution(values: list[float]) -> str:
    """median / p90 / max of the finite values, or '-'."""
    finite = np.array([value for value in values if value is not None and math.isfinite(value)])
    if not finite.size:
        return "- | - | -"
    return " | ".join(f"{value:.4f}" for value in (np.median(finite), np.quantile(finite, 0.9), finite.max()))


def _report(settings: RunSettings, segments, entries, skipped_sequences, skipped_segments, unused) -> str:
    """report.md: what was written, what was skipped and why, invalid depth, the self-check, captions."""
    cut = settings.cut
    lines = [f"# Conversion report: {settings.source}", "",
             f"- root: `{settings.root}`", f"- out: `{settings.out}`",
             f"- clips: {cut.num_frames} frames at {cut.height}x{cut.width}, stride {settings.stride}"
             + (f" (target {settings.fps:g} fps)" if settings.fps else "") + f", far_depth {cut.far_depth}, "
             f"limit {settings.limit}", "",
             "## Clips", "",
             f"- planned segments: {len(segments)}", f"- clips written (in index.jsonl): {len(entries)}",
             f"- segments skipped: {len(skipped_segments)}", f"- sequences skipped: {len(skipped_sequences)}", ""]
    if skipped_sequences:
        lines += ["## Sequences skipped", "", "| sequence | reason |", "| --- | --- |"]
        lines += [f"| {name} | {reason} |" for name, reason in skipped_sequences] + [""]
    if skipped_segments:
        lines += ["## Segments skipped", "", "| clip | sequence | first frame | reason |", "| --- | --- | --- | --- |"]
        lines += [f"| {segment.name} | {segment.sequence.name} | {segment.first} | {reason.replace('|', '/')} |"
                  for segment, reason in skipped_segments] + [""]
    metas = [read_meta(settings.out / entry["clip"]) for entry in entries]
    pixels = len(entries) * cut.num_frames * cut.height * cut.width
    nonfinite = sum(int(meta.get("depth_nonfinite", 0)) for meta in metas)
    far = sum(int(meta.get("depth_far", 0)) for meta in metas)
    lines += ["## Invalid depth (set to 0)", "", "Counted in output pixels (after the nearest-neighbour resize).", "",
              f"- NaN, infinite or negative: {nonfinite} pixels ({nonfinite / max(pixels, 1):.4%}) in "
              f"{sum(int(meta.get('depth_nonfinite', 0)) > 0 for meta in metas)} clips",
              f"- beyond far_depth ({cut.far_depth} m): {far} pixels ({far / max(pixels, 1):.4%}) in "
              f"{sum(int(meta.get('depth_far', 0)) > 0 for meta in metas)} clips", ""]
    flagged = [entry for entry in entries if entry["flagged"]]
    unchecked = sum(entry["selfcheck_error"] is None for entry in entries)
    lines += ["## Self-check", "",
              "Worst frame per clip (one4d.data.selfcheck): median relative depth error of each frame reprojected into "
              "others, and the fraction of points more than 5 % off.", "",
              "| dataset | clips | not checkable | error median | p90 | max | outliers median | p90 | max | flagged |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
              f"| {settings.source} | {len(entries)} | {unchecked} | {_distribution([e['selfcheck_error'] for e in entries])} | "
              f"{_distribution([e['selfcheck_outliers'] for e in entries])} | {len(flagged)} |", "",
              f"Flagged: error above {settings.error_threshold} or outliers above {settings.outlier_threshold}.", ""]
    unmasked = sum(meta.get("selfcheck_masked") is False for meta in metas)
    if unmasked:
        lines += [f"{unmasked} of {len(entries)} clips have no dynamic mask (the dataset ships none): their moving things "
                  "were compared as if static and count as outliers, so on scenes with motion a flag there is a hint to "
                  "look at the clip, not proof of a wrong convention (the median error is the steadier number).", ""]
    if flagged:
        lines += ["| flagged clip | error | outliers |", "| --- | --- | --- |"]
        lines += [f"| {entry['clip']} | {entry['selfcheck_error']:.4f} | {entry['selfcheck_outliers']:.4f} |" for entry in flagged] + [""]
    sources = [meta.get("caption_source", "none") for meta in metas]
    lines += ["## Captions", "",
              f"- from the dataset: {sources.count('dataset')}, from captions= file: {sources.count('file')}, "
              f"other (e.g. scripts/caption_clips.py): {sum(s not in ('dataset', 'file', 'none') for s in sources)}, "
              f"empty: {sum(not meta.get('caption') for meta in metas)}",
              f"- caption file keys never used: {len(unused)}" + ("" if settings.captions else " (no captions= file)")]
    lines += [f"  - `{key}`" for key in unused]
    return "\n".join(lines) + "\n"
