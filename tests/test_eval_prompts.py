"""Evaluation prompts and guidance (issue 13, item 3): per-sequence prompts, Wan's negative prompt, CFG that matters."""

import inspect
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import yaml

from one4d.eval import EvalSequence
from one4d.pipeline import ModelPredictor, One4DPipeline, load_pipeline
from one4d.pipeline.evaluation import build_eval_predictor, load_prompts
from one4d.pipeline.pipeline import WAN_NEGATIVE_PROMPT

REPO = Path(__file__).resolve().parents[1]

# Copied by hand from Wan-Video/Wan2.1, wan/configs/shared_config.py (wan_shared_cfg.sample_neg_prompt).
WAN_SHARED_CONFIG_NEG_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，"
    "残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，"
    "三条腿，背景人很多，倒着走"
)


def test_the_negative_prompt_is_wans_and_the_default_of_sampling_and_evaluation():
    assert WAN_NEGATIVE_PROMPT == WAN_SHARED_CONFIG_NEG_PROMPT
    assert inspect.signature(One4DPipeline.__call__).parameters["negative_prompt"].default == WAN_NEGATIVE_PROMPT
    sample = yaml.safe_load((REPO / "configs" / "sample.yaml").read_text())
    model_predictor = yaml.safe_load((REPO / "configs" / "eval.yaml").read_text())["model_predictor"]
    assert sample["negative_prompt"] is None and model_predictor["negative_prompt"] is None  # null: the one constant
    assert ModelPredictor(None).negative_prompt == WAN_NEGATIVE_PROMPT
    assert ModelPredictor(None, negative_prompt="").negative_prompt == ""


def write_prompts(path, entries):
    path.write_text("".join(json.dumps(entry) + "\n" for entry in entries) + "\n")
    return path


def test_prompts_file_gives_each_sequence_its_prompt_and_the_fixed_one_otherwise(tmp_path, caplog):
    path = write_prompts(tmp_path / "prompts.jsonl", [{"sequence": "alley_2", "prompt": "a girl runs in an alley"},
                                                      {"sequence": "market_5", "prompt": "a market street"}])
    predictor = ModelPredictor(None, prompt="a video", prompts=path)
    names = ["alley_2", "market_5", "cave_4", "bamboo_1", "temple_2"]
    with caplog.at_level(logging.WARNING, logger="one4d.pipeline.evaluation"):
        assert predictor.check_prompts(names) == ["cave_4", "bamboo_1", "temple_2"]  # the driver, before the run
        predictor.check_prompts(names)
        assert predictor.prompt_for("alley_2") == "a girl runs in an alley" and predictor.prompt_for("cave_4") == "a video"
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1, messages  # said once, with the count
    assert messages[0].startswith("prompts.jsonl has no prompt for 3 of 5 sequences: they use the fixed prompt 'a video'")


def test_a_missing_prompt_is_said_once_even_without_the_count(tmp_path, caplog):
    predictor = ModelPredictor(None, prompts={"alley_2": "a girl"})
    with caplog.at_level(logging.WARNING, logger="one4d.pipeline.evaluation"):
        for name in ("cave_4", "temple_2", "alley_2"):
            predictor.prompt_for(name)
    assert len(caplog.records) == 1 and "no prompt for sequence cave_4" in caplog.records[0].getMessage()
    assert ModelPredictor(None, prompt="x").check_prompts(["a", "b"]) == []  # no file: the fixed prompt is the plan


@pytest.mark.parametrize("content, message", [
    ("not json\n", "prompts.jsonl:1: not JSON"),
    ('{"sequence": "a"}\n', 'prompts.jsonl:1: expected {"sequence": name, "prompt": text}'),
    ('{"sequence": "a", "prompt": "x"}\n\n{"sequence": "a", "prompt": "y"}\n', "prompts.jsonl:3: sequence 'a' is given twice"),
])
def test_a_bad_prompts_file_is_one_line_naming_the_line(tmp_path, content, message):
    (tmp_path / "prompts.jsonl").write_text(content)
    with pytest.raises(ValueError, match=message.replace("{", "\\{").replace("}", "\\}")):
        load_prompts(tmp_path / "prompts.jsonl")


def test_a_bad_prompts_file_fails_before_the_model_loads(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        build_eval_predictor(preset="no-such-preset", prompts=str(tmp_path / "missing.jsonl"))


@pytest.fixture(scope="module")
def pipeline():
    return load_pipeline(preset="tiny", components="tiny", lora_rank=4)


def predict(pipeline, guidance, prompt, negative_prompt, calls=None):
    frames = np.random.default_rng(0).integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)
    predictor = ModelPredictor(pipeline, num_frames=5, height=32, width=32, num_inference_steps=2, guidance_scale=guidance,
                               prompt="unused", prompts={"seq": prompt}, negative_prompt=negative_prompt)
    hook = pipeline.transformer.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]) if calls is not None else None)
    try:
        return predictor(EvalSequence("seq", frames), observed=[0, 2, 4]).depth
    finally:
        hook.remove()


def test_guidance_changes_the_prediction_only_with_a_prompt(pipeline):
    """The issue's bug: with an empty prompt and an empty negative prompt the conditional and unconditional passes are
    one input, so CFG 4 equals CFG 1 (to float rounding). With a prompt (or Wan's negative prompt) it does not.
    Measured on the tiny random model (largest depth change over mean depth): empty 4e-5 (float rounding through
    post-optimisation), prompt + Wan's negative 0.55, Wan's negative alone 0.27."""
    def relative(a, b):
        return float(np.abs(a - b).max() / np.abs(b).mean())

    calls = []
    plain = predict(pipeline, 1.0, "a dog runs on the beach", WAN_NEGATIVE_PROMPT, calls)
    assert calls and set(calls) == {1}  # guidance 1: no unconditional pass
    guided = predict(pipeline, 4.0, "a dog runs on the beach", WAN_NEGATIVE_PROMPT)
    assert relative(guided, plain) > 0.05
    empty = predict(pipeline, 1.0, "", ""), predict(pipeline, 4.0, "", "")
    assert relative(*empty) < 1e-3
    negative_only = predict(pipeline, 4.0, "", WAN_NEGATIVE_PROMPT)
    assert relative(negative_only, empty[0]) > 0.05


def test_eval_script_warns_once_with_the_count_and_a_changed_prompts_file_is_not_resumed(tmp_path):
    import subprocess
    import sys

    from test_eval_datasets import make_fake_sintel
    from test_eval_model import TINY

    make_fake_sintel(tmp_path / "sintel")  # alley_2, bamboo_1
    prompts = write_prompts(tmp_path / "prompts.jsonl", [{"sequence": "alley_2", "prompt": "a girl runs in an alley"}])
    command = [sys.executable, str(REPO / "scripts" / "eval.py"), "benchmark=sintel", f"root={tmp_path / 'sintel'}",
               "benchmark.reader.sequences=[alley_2,bamboo_1]", "mode=model",
               *TINY, "model_predictor.guidance_scale=1", f"model_predictor.prompts={prompts}", "label=tiny",
               f"output_dir={tmp_path / 'out'}"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    warnings = [line for line in (done.stdout + done.stderr).splitlines() if "has no prompt for" in line]
    assert len(warnings) == 1 and "1 of 2 sequences" in warnings[0], done.stderr[-2000:]
    write_prompts(prompts, [{"sequence": "alley_2", "prompt": "another caption"}])  # same path, other prompts
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 2 and "prompts_sha256" in done.stderr, done.stderr[-2000:]
