"""The VLM captioner over a clip root, with a tiny random LLaVA (a real transformers class) built locally."""

import json
import subprocess
import sys

import pytest
import torch

from one4d.data.captioner import VLMCaptioner, caption_root, frame_indices
from one4d.data.clip import read_meta, write_clip

WORDS = ["<pad>", "<unk>", "<s>", "</s>", "<image>", "USER:", "ASSISTANT:"] + [f"w{i}" for i in range(40)]
TEMPLATE = ("{% for m in messages %}{{ m['role'].upper() }}: {% for c in m['content'] %}{% if c['type'] == 'image' %}<image> "
            "{% else %}{{ c['text'] }} {% endif %}{% endfor %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    """A random LLaVA (CLIP vision tower + Llama) with a word-level tokenizer and a chat template, saved to a folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration,
                              LlavaProcessor, PreTrainedTokenizerFast)

    folder = tmp_path_factory.mktemp("tiny_llava")
    backend = Tokenizer(models.WordLevel({word: index for index, word in enumerate(WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                        eos_token="</s>", extra_special_tokens={"image_token": "<image>"})
    images = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    processor = LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=14, num_additional_image_tokens=1,
                               vision_feature_select_strategy="default", chat_template=TEMPLATE)
    torch.manual_seed(0)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       image_size=28, patch_size=14, projection_dim=16),
        text_config=LlamaConfig(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                num_attention_heads=2, num_key_value_heads=2, pad_token_id=0, bos_token_id=2, eos_token_id=3),
        image_token_index=WORDS.index("<image>"), vision_feature_layer=-1, vision_feature_select_strategy="default",
    )
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _clip_root(root, captions):
    """Clips of 5 random frames at 32x48, one per caption ("" = uncaptioned), and an index.jsonl keyed by clip."""
    generator = torch.Generator().manual_seed(0)
    lines = []
    for number, caption in enumerate(captions):
        depth = torch.rand(5, 32, 48, generator=generator) + 1
        intrinsics = torch.tensor([[40.0, 0, 23.5], [0, 40.0, 15.5], [0, 0, 1]]).expand(5, 3, 3)
        name = f"clip_{number:02d}"
        write_clip(root / name, torch.rand(5, 32, 48, 3, generator=generator), None, depth, intrinsics,
                   torch.eye(4).expand(5, 4, 4), {"caption": caption, "source": "test"}, layout="depth")
        lines.append(json.dumps({"clip": name, "source": "test", "caption": caption}))
    (root / "index.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_frame_indices_spread_over_the_clip():
    assert frame_indices(81, 4) == [0, 27, 53, 80]
    assert frame_indices(3, 4) == [0, 1, 2]


def test_captions_are_written_resumed_and_overwritten(tmp_path, tiny_vlm):
    root = _clip_root(tmp_path / "clips", ["", "a dataset caption", "", ""])
    built = []

    def make():
        built.append(VLMCaptioner(tiny_vlm, prompt="w1 w2", max_new_tokens=6))
        return built[-1]

    report = caption_root(root, make, frames=2, batch_size=2, log=lambda line: None)
    assert sorted(report.captioned) == ["clip_00", "clip_02", "clip_03"] and report.already_captioned == 1
    for name in ("clip_00", "clip_02", "clip_03"):
        meta = read_meta(root / name)
        assert meta["caption"].strip() and meta["caption_source"] == f"vlm:{tiny_vlm.name}"
    assert read_meta(root / "clip_01")["caption"] == "a dataset caption"  # the dataset's own caption wins
    index = {entry["clip"]: entry for entry in map(json.loads, (root / "index.jsonl").read_text().splitlines())}
    assert all(index[name]["caption"] == read_meta(root / name)["caption"] for name in index)
    assert report.index_lines_updated == 3

    # Resumable: nothing left to do, so no model is even loaded.
    again = caption_root(root, make, frames=2, batch_size=2, log=lambda line: None)
    assert again.captioned == [] and again.already_captioned == 4 and len(built) == 1
    # overwrite: every clip recaptioned (greedy decoding: the same frames give the same caption).
    before = read_meta(root / "clip_00")["caption"]
    forced = caption_root(root, make, frames=2, batch_size=3, overwrite=True, log=lambda line: None)
    assert len(forced.captioned) == 4 and read_meta(root / "clip_00")["caption"] == before
    assert read_meta(root / "clip_01")["caption_source"].startswith("vlm:")


def _run(*overrides):
    return subprocess.run([sys.executable, "scripts/caption_clips.py", *overrides], capture_output=True, text=True, timeout=300)


def test_command_captions_a_root_and_a_missing_model_is_one_line(tmp_path, tiny_vlm):
    root = _clip_root(tmp_path / "clips", ["", ""])
    result = _run(f"clips={root}", f"captioner.model={tiny_vlm}", "captioner.frames=2", "captioner.max_new_tokens=4", "limit=1")
    assert result.returncode == 0, result.stderr
    assert "captioned 1 clips" in result.stdout
    assert read_meta(root / "clip_00")["caption"] and not read_meta(root / "clip_01")["caption"]

    missing = _run(f"clips={root}", f"captioner.model={tmp_path / 'no_model'}")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert missing.stderr.startswith("error: captioner.model=") and "no config.json" in missing.stderr


def test_a_processor_needing_a_missing_package_is_one_line(tiny_vlm, monkeypatch):
    import transformers

    def missing(*args, **kwargs):  # what transformers 5 raises for Qwen2-VL's video processor without torchvision
        raise ImportError("\nQwen2VLVideoProcessor requires the Torchvision library but it was not found in your environment.\nmore")

    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", missing)
    with pytest.raises(ValueError, match=r"needs a package that is not installed: Qwen2VLVideoProcessor requires the Torchvision") as error:
        VLMCaptioner(tiny_vlm)
    assert "\n" not in str(error.value)
