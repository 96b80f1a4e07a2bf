"""The paper's data mixture: configs/data/paper_mix.yaml composes with the 14B recipe, roots are drawn in proportion
to their weights, and the loader trains the tiny model on converted fixture clips of two sources mixed by weight."""

import json

import pytest
import torch

from one4d.data.clip import write_clip
from one4d.data.dataset import ClipDataset
from one4d.data.synthetic import render_scene
from one4d.training import Trainer
from one4d.training.builders import build_dataset
from one4d.training.testing import compose_train_config

PAPER_ROOTS = ["omniworld_game", "bedlam", "pointodyssey", "tartanair", "spatialvid"]


def test_documented_command_composes_with_the_papers_mixture():
    roots = ",".join(f"/data/clips/{name}" for name in PAPER_ROOTS)
    cfg = compose_train_config(["experiment=one4d_14b", "data=paper_mix", f"data.roots=[{roots}]", "run_dir=/tmp/unused"])
    data = cfg.data
    assert [str(root).rsplit("/", 1)[-1] for root in data.roots] == PAPER_ROOTS
    assert (data.num_frames, data.height, data.width) == (81, 352, 624)
    assert list(data.task_probabilities) == [0.35, 0.30, 0.35]
    weights = [float(weight) for weight in data.weights]
    assert sum(weights[:4]) == pytest.approx(0.5) and weights[4] == pytest.approx(0.5)  # 17k synthetic : 17k real
    assert cfg.model.preset == "wan2.1-fun-14b-inp" and cfg.launcher.kind == "deepspeed"  # the experiment still applies
    # The config's own roots are the documented conversion outputs, in the weights' order.
    default = compose_train_config(["data=paper_mix", "run_dir=/tmp/unused"]).data
    assert [str(root) for root in default.roots] == [f"/data/clips/{name}" for name in PAPER_ROOTS]


def _root(root, source, count, layout):
    """``count`` tiny clips of one source (5 frames at 32x32)."""
    for index in range(count):
        scene = render_scene(index + (100 if source == "b" else 0), num_frames=5, height=32, width=32)
        pointmaps = None if layout == "depth" else scene.pointmaps
        write_clip(root / f"{source}_{index}", scene.rgb, pointmaps, scene.depth, scene.intrinsics, scene.world_to_camera,
                   {"caption": scene.caption, "source": source}, rgb_format="png", layout=layout)
    return root


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("mix")
    return _root(base / "synthetic_a", "a", 2, "full"), _root(base / "real_b", "b", 3, "depth")


def test_weights_and_roots_of_unequal_length_are_one_line(roots):
    cfg = compose_train_config(["data=paper_mix", f"data.roots=[{roots[0]},{roots[1]}]", "run_dir=/tmp/unused"])
    with pytest.raises(ValueError, match=r"weights must be one .* per root.* for 2 roots") as error:
        build_dataset(cfg.data, seed=0)
    assert "\n" not in str(error.value)


def test_roots_are_sampled_in_proportion_to_their_weights(roots):
    dataset = ClipDataset(list(roots), num_frames=5, height=32, width=32, weights=[3, 1], length=160)
    sources = [dataset[index]["source"] for index in range(len(dataset))]
    share = sources.count("a") / len(sources)
    assert abs(share - 0.75) < 0.1, share  # binomial sd 0.034 at n = 160
    assert not dataset.bad_clips


def _convert(source: str, download, out, layout: str):
    """scripts/prepare_data.py's run, in process: one 5-frame clip at 32x48 from a fixture in the dataset's own format."""
    from hydra import compose, initialize_config_dir

    from one4d.data.prepare import prepare, settings_from_config
    from one4d.training.testing import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("prepare_data", overrides=[f"source={source}", f"root={download}", f"out={out}", "num_frames=5", "height=32",
                                                 "width=48", "stride=1", "workers=1", "progress=false", f"layout={layout}"])
    assert prepare(settings_from_config(cfg))["clips"] == 1
    return out


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A PointOdyssey download (synthetic, full layout) and a SpatialVID one (real, depth-only layout), converted."""
    pytest.importorskip("OpenEXR")  # SpatialVID's depth is a zip of EXRs
    from source_fixtures_a import known_scene, write_pointodyssey
    from source_fixtures_b import make_scene, write_spatialvid

    base = tmp_path_factory.mktemp("converted")
    write_pointodyssey(base / "pointodyssey", known_scene(num_frames=6, height=96, width=144))
    write_spatialvid(base / "spatialvid", make_scene(seed=4, frames=6, height=96, width=144))
    return (_convert("pointodyssey", base / "pointodyssey", base / "clips_pointodyssey", "full"),
            _convert("spatialvid", base / "spatialvid", base / "clips_spatialvid", "depth"))


def test_tiny_model_trains_on_converted_clips_of_two_sources_mixed_by_weight(converted, tmp_path, monkeypatch):
    seen = []
    original = ClipDataset.load_sample

    def recording(self, folder, stored_frames, generator):
        sample = original(self, folder, stored_frames, generator)
        seen.append(sample["source"])
        return sample

    monkeypatch.setattr(ClipDataset, "load_sample", recording)
    cfg = compose_train_config([
        "experiment=tiny_cpu", f"run_dir={tmp_path / 'run'}", "train.report_to=null", "train.progress_bar=false",
        "train.checkpoint_every=0", "train.log_every=0", "+model.base_overrides.num_layers=2", "train.steps=6",
        f"data.roots=[{converted[0]},{converted[1]}]", "data.weights=[1,1]", "data.length=6",
    ])
    trainer = Trainer(cfg).setup()
    losses = trainer.train()["losses"]
    trainer.close()
    assert len(losses) == 6 and all(torch.isfinite(torch.tensor(losses)))
    assert set(seen) == {"pointodyssey", "spatialvid"}, seen  # both sources reached the model
    layouts = {json.loads(line)["clip"]: root for root in converted for line in (root / "index.jsonl").read_text().splitlines()}
    assert sorted(json.loads((root / clip / "meta.json").read_text())["layout"] for clip, root in layouts.items()) == ["depth", "full"]
