"""Can the camera path be read from the tiny VAE's RGB latents at all? A direct camera regressor, beside the mean path.

Issue 12's camera check (ATE below the no-input mean path) fails for every learner that goes through pointmaps:
One4D's XYZ branch and ``bench_rgb_to_xyz``'s direct XYZ regressor (benchmarks/RESULTS_tiny_model.md sections 8, 12).
This asks whether the information is missing or the pointmap route loses it: a small 3-D CNN maps the RGB latents
(16, f, h, w) of a clip straight to the relative camera pose of frames 1 .. F-1 (centre in the clip's normalised
pointmap units, rotation as the first two columns of its matrix, Zhou et al. 2019's continuous 6-D form), trained on
the first ``--clips`` training scenes (rendered and encoded here, seeds 0 ..), and scored on the demo's held-out
scenes with the demo's ATE (``pose_metrics``: camera centres after Sim(3) alignment) beside the no-input mean path
of the demo's 64 training scenes. One CPU thread.

``--features`` says what the regressor reads: ``rgb_latents`` (the VAE's, above), ``xyz_latents`` (the VAE's
latents of the TRUE normalised pointmaps), or the checkpoint's One4D at pure noise (sigma 1, the full-video task's
condition, as ``bench_condition_use`` builds it): the last hidden states of its XYZ branch (``xyz_branch``, what its
``proj_out`` turns into XYZ latents) or of its RGB branch (``rgb_branch``), on the (f, h/p_h, w/p_w) token grid of its patch size, or the
XYZ latents it estimates in that step (``xyz_estimate``). Following the camera from the input to the pointmaps says
where it is lost: a stage that a learned reader still gets it from has it.

    .venv/bin/python benchmarks/bench_camera_readability.py --clips 1536 --steps 4000
    .venv/bin/python benchmarks/bench_camera_readability.py --clips 1536 --steps 4000 --features xyz_branch
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from bench_tiny_vae import HELD_OUT_SEED, held_out_scene


def pose_target(scene, scale: float) -> torch.Tensor:
    """(F-1, 9) relative poses of frames 1 .. F-1: centre / scale, then the rotation's first two columns."""
    from one4d.demo import true_camera_path

    camera_to_world = true_camera_path(scene)[1:]  # (F-1, 4, 4); frame 0 is the identity
    columns = camera_to_world[:, :3, :2].transpose(1, 2).reshape(-1, 6)  # (F-1, 6)
    return torch.cat([camera_to_world[:, :3, 3] / scale, columns], -1).float()


def pose_path(target: torch.Tensor, scale: float) -> torch.Tensor:
    """(F-1, 9) -> (F, 4, 4) float64 camera-to-world path; the rotation by Gram-Schmidt on the two columns."""
    target = target.double()
    first, second = target[:, 3:6], target[:, 6:9]
    x = nn.functional.normalize(first, dim=-1)
    y = nn.functional.normalize(second - (x * second).sum(-1, keepdim=True) * x, dim=-1)
    path = torch.eye(4, dtype=torch.float64).repeat(len(target) + 1, 1, 1)
    path[1:, :3, :3] = torch.stack([x, y, torch.linalg.cross(x, y)], -1)
    path[1:, :3, 3] = target[:, :3] * scale
    return path


FEATURES = ("rgb_latents", "xyz_latents", "xyz_branch", "rgb_branch", "xyz_estimate")


@torch.no_grad()
def branch_features(checkpoint: Path, encoders, seeds, settings: dict, branch: str) -> torch.Tensor:
    """At sigma 1 with the full-video condition: (N, D, f, h/p_h, w/p_w), the input of the One4D branch's ``proj_out``,
    or for ``xyz_estimate`` (N, 16, f, h, w), the XYZ latents the model estimates in that one step (x - sigma flow)."""
    from bench_condition_use import held_out_inputs

    from one4d.demo import DemoSettings, load_demo_pipeline

    model = load_demo_pipeline(checkpoint, DemoSettings()).transformer.eval()
    head = model.xyz_proj_out if branch == "xyz_branch" else model.base.proj_out
    captured = []
    hook = head.register_forward_hook(lambda module, args, output: captured.append(args[0]))
    # Seed 0 for every call (as measured in RESULTS_tiny_model.md section 19): held-out scene i draws the noise of
    # training scene i; if that matters at all, it pulls a held-out estimate towards that training scene's camera.
    generator, chunks = torch.Generator().manual_seed(0), []
    seeds = list(seeds)
    for start in range(0, len(seeds), 64):
        inputs = held_out_inputs(encoders, settings, len(seeds[start:start + 64]), seeds[start])
        noise = torch.randn(inputs["rgb_latents"].shape, generator=generator)
        xyz_noise = torch.randn(inputs["xyz_latents"].shape, generator=generator)
        timestep = torch.full((len(noise),), 1000.0)
        _, xyz_flow = model(torch.cat([noise, inputs["condition"]], 1), xyz_noise, timestep, inputs["text_embeds"], inputs["image_embeds"])
        if branch == "xyz_estimate":
            captured.clear()
            chunks.append(xyz_noise - xyz_flow)  # (B, 16, f, h, w)
            continue
        p_t, p_h, p_w = model.base.config.patch_size
        f, h, w = noise.shape[2] // p_t, noise.shape[3] // p_h, noise.shape[4] // p_w
        tokens = captured.pop()  # (B, f h w, D)
        chunks.append(tokens.transpose(1, 2).reshape(len(noise), -1, f, h, w))  # (B, D, f, h/p_h, w/p_w)
    hook.remove()
    return torch.cat(chunks)


@torch.no_grad()
def encoded_scenes(checkpoint: Path, encoders, seeds, settings: dict, features: str) -> list[tuple]:
    """(what the regressor reads (C, f, h, w), pose target (F-1, 9), scene, scale) per seed."""
    from one4d.encoding import encode_video

    items = []
    for seed in seeds:
        scene, rgb, xyz, (_, scale) = held_out_scene(seed, settings)
        video = {"rgb_latents": rgb, "xyz_latents": xyz}.get(features)
        latents = None if video is None else encode_video(encoders.vae, video)[0]  # (16, f, h, w)
        items.append((latents, pose_target(scene, float(scale)), scene, float(scale)))
    if features not in ("rgb_latents", "xyz_latents"):
        read = branch_features(checkpoint, encoders, seeds, settings, features)
        items = [(read[index], *item[1:]) for index, item in enumerate(items)]
    return items


def camera_regressor(channels: int, frames: int, grid: tuple, width: int = 64) -> nn.Sequential:
    """Two 3 x 3 x 3 convolutions, two strided ones (h, w halved twice), then an MLP to 9 numbers per frame."""
    f, h, w = grid
    halved_twice = lambda size: ((size + 1) // 2 + 1) // 2  # noqa: E731 (3 x 3 convolution, stride 2, padding 1)
    flat = width * f * halved_twice(h) * halved_twice(w)
    return nn.Sequential(
        nn.Conv3d(channels, width, 3, padding=1), nn.GELU(), nn.Conv3d(width, width, 3, padding=1), nn.GELU(),
        nn.Conv3d(width, width, 3, stride=(1, 2, 2), padding=1), nn.GELU(),
        nn.Conv3d(width, width, 3, stride=(1, 2, 2), padding=1), nn.GELU(), nn.Flatten(),
        nn.Linear(flat, 256), nn.GELU(), nn.Linear(256, (frames - 1) * 9),
    )


def mean_ate(net, items, mean, std) -> float:
    from one4d.demo import true_camera_path
    from one4d.eval import pose_metrics

    net.eval()
    with torch.no_grad():
        ates = [pose_metrics(pose_path(net(latents[None]).view(-1, 9) * std + mean, scale), true_camera_path(scene))["ate"]
                for latents, _, scene, scale in items]
    net.train()
    return sum(ates) / len(ates)


def main() -> None:
    from one4d.demo import DEMO_SEEDS, true_camera_path
    from one4d.demo_controls import training_prior
    from one4d.encoding import load_encoders
    from one4d.eval import pose_metrics
    from one4d.sampling_file import read_sampling_file

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="data/checkpoints/tiny", help="its VAE encodes every scene")
    parser.add_argument("--clips", type=int, default=1536, help="training scenes, seeds 0 .. clips - 1 (make tiny-model's)")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--scenes", type=int, default=len(DEMO_SEEDS), help="held-out scenes from the demo's first seed")
    parser.add_argument("--features", choices=FEATURES, default="rgb_latents")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    checkpoint = Path(args.checkpoint)
    settings = read_sampling_file(checkpoint)["trained_at"]
    encoders = load_encoders(str(checkpoint / "base"))
    started = time.perf_counter()
    training = encoded_scenes(checkpoint, encoders, range(args.clips), settings, args.features)
    held_out = encoded_scenes(checkpoint, encoders, range(HELD_OUT_SEED, HELD_OUT_SEED + args.scenes), settings, args.features)
    latents = torch.stack([item[0] for item in training])  # (N, C, f, h, w)
    targets = torch.stack([item[1] for item in training])  # (N, F-1, 9)
    mean, std = targets.mean(0), targets.std(0) + 1e-6  # regress standardised targets
    net = camera_regressor(latents.shape[1], settings["num_frames"], tuple(latents.shape[2:]))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.steps)
    for step in range(1, args.steps + 1):
        batch = torch.randint(0, len(latents), (32,))
        loss = ((net(latents[batch]).view(len(batch), -1, 9) - (targets[batch] - mean) / std) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 1000 == 0 or step == args.steps:
            print(json.dumps({"features": args.features, "clips": args.clips, "step": step, "seconds": round(time.perf_counter() - started),
                              "train_batch_loss": round(loss.item(), 4), "held_out_ate": round(mean_ate(net, held_out, mean, std), 4),
                              "training_scenes_0_9_ate": round(mean_ate(net, training[:10], mean, std), 4)}), flush=True)
    prior = training_prior(settings["num_frames"], settings["height"], settings["width"])
    mean_path = [pose_metrics(prior.camera_to_world, true_camera_path(scene))["ate"] for _, _, scene, _ in held_out]
    print(json.dumps({"held_out_scenes": args.scenes, "no_input_mean_path_ate": round(sum(mean_path) / len(mean_path), 4)}))


if __name__ == "__main__":
    main()
