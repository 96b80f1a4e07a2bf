"""Does a trained tiny model use its condition? One-step predictions with the true, another scene's and no condition (issue 12 item 2).

For held-out synthetic scenes (the demo's seeds, the checkpoint's training size) the full-video task's
UMC condition is built as the trainer builds it (``one4d.encoding.condition_latents``: every frame
observed, so its latents ARE the target latents). From pure noise (sigma = 1) and at sigma = 0.5, the
model's clean-latent estimate z0 = x - sigma * flow is compared with the true latents (MSE on the
normalised latents), when it is given

- ``true``: the scene's own condition;
- ``shuffled``: the next scene's condition (the demo's wrong-input control);
- ``zero``: mask and condition latents all 0 (nothing observed),

next to the no-input prior: the mean latent of the held-out scenes. A model that uses its input has
``true`` far below the prior and ``shuffled`` far above ``true``. Both the stage-1 base (RGB) and the
One4D model (RGB and XYZ) of the checkpoint are measured.

For XYZ with the true condition the error is also split (``xyz/true/sigma*/...``): ``bias``, the scene-mean
of the estimates against the mean latent (what every scene shares: the room-shaped ramps); ``scene_part``, the
error of each estimate's deviation from that mean against the true deviation (what tells one scene from
another); ``spread`` and ``true_spread``, how much the estimates and the true latents vary between scenes.

    python benchmarks/bench_condition_use.py [--checkpoint data/checkpoints/tiny] [--scenes 10] [--first-seed 0]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from bench_tiny_vae import HELD_OUT_SEED, held_out_scene


@torch.no_grad()
def held_out_inputs(encoders, settings: dict, scenes: int, first_seed: int = HELD_OUT_SEED) -> dict:
    """Latents (N, 16, f, h, w) of RGB and normalised XYZ, the full-task condition (N, 20, f, h, w), text and CLIP context."""
    from one4d.conditioning import observed_mask
    from one4d.encoding import condition_latents, encode_prompt, encode_video, first_observed_image_embeds

    rgb, xyz, captions = [], [], []
    for seed in range(first_seed, first_seed + scenes):
        scene, scene_rgb, scene_xyz, _ = held_out_scene(seed, settings)
        rgb.append(scene_rgb)
        xyz.append(scene_xyz)
        captions.append(scene.caption)
    rgb, xyz = torch.cat(rgb), torch.cat(xyz)  # (N, 3, F, H, W)
    observed = observed_mask(list(range(rgb.shape[2])), rgb.shape[2])[None].expand(len(rgb), -1)  # (N, F)
    return {
        "rgb_latents": encode_video(encoders.vae, rgb), "xyz_latents": encode_video(encoders.vae, xyz),
        "condition": condition_latents(encoders, rgb, observed),
        "text_embeds": encode_prompt(encoders.tokenizer, encoders.text_encoder, captions),
        "image_embeds": first_observed_image_embeds(encoders, rgb, observed),
    }


def mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b) ** 2).mean())


def shared_and_scene_errors(estimate: torch.Tensor, truth: torch.Tensor) -> dict:
    """The error of (N, C, f, h, w) estimates split into what all N scenes share and what differs between them."""
    estimate_mean, true_mean = estimate.mean(0, keepdim=True), truth.mean(0, keepdim=True)
    return {
        "bias": mse(estimate_mean, true_mean),
        "scene_part": mse(estimate - estimate_mean, truth - true_mean),
        "spread": mse(estimate, estimate_mean.expand_as(estimate)),
        "true_spread": mse(truth, true_mean.expand_as(truth)),
    }


@torch.no_grad()
def one_step_errors(model, inputs: dict, joint: bool, sigmas=(1.0, 0.8, 0.5)) -> dict:
    """MSE of z0 = x - sigma * flow against the true latents, per condition variant and sigma."""
    z, p = inputs["rgb_latents"], inputs["xyz_latents"]
    generator = torch.Generator().manual_seed(0)
    rgb_noise, xyz_noise = torch.randn(z.shape, generator=generator), torch.randn(p.shape, generator=generator)
    variants = {"true": inputs["condition"], "shuffled": inputs["condition"].roll(1, 0), "zero": torch.zeros_like(inputs["condition"])}
    image = inputs["image_embeds"]
    results = {}
    for sigma in sigmas:
        timestep = torch.full((len(z),), 1000.0 * sigma)
        noisy_rgb, noisy_xyz = (1 - sigma) * z + sigma * rgb_noise, (1 - sigma) * p + sigma * xyz_noise
        for name, condition in variants.items():
            rgb_input = torch.cat([noisy_rgb, condition], dim=1)  # (N, 36, f, h, w)
            if joint:
                rgb_flow, xyz_flow = model(rgb_input, noisy_xyz, timestep, inputs["text_embeds"], image)
                estimate = noisy_xyz - sigma * xyz_flow
                results[f"xyz/{name}/sigma{sigma}"] = mse(estimate, p)
                if name == "true":
                    results.update({f"xyz/true/sigma{sigma}/{key}": value for key, value in shared_and_scene_errors(estimate, p).items()})
            else:
                rgb_flow = model(rgb_input, timestep, inputs["text_embeds"], image)
            results[f"rgb/{name}/sigma{sigma}"] = mse(noisy_rgb - sigma * rgb_flow, z)
    results["rgb/prior"] = mse(z.mean(0, keepdim=True).expand_as(z), z)
    results["xyz/prior"] = mse(p.mean(0, keepdim=True).expand_as(p), p)
    return results


def main() -> None:
    from one4d.demo import DemoSettings, checkpoint_preset, load_demo_pipeline
    from one4d.encoding import load_encoders
    from one4d.models import WanBaseModel
    from one4d.weights import load_base_transformer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="data/checkpoints/tiny")
    parser.add_argument("--scenes", type=int, default=10)
    parser.add_argument("--state", help="One4D trainable state to measure (default <checkpoint>/one4d; e.g. a trainer checkpoint mid-run)")
    parser.add_argument("--first-seed", type=int, default=HELD_OUT_SEED, help="0: the first TRAINING scenes (fit, not generalisation)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    checkpoint = Path(args.checkpoint)
    trained_at = json.loads((checkpoint / "sampling.json").read_text())["trained_at"]
    settings = {"num_frames": trained_at["num_frames"], "height": trained_at["height"], "width": trained_at["width"]}
    encoders = load_encoders(str(checkpoint / "base"))
    inputs = held_out_inputs(encoders, settings, args.scenes, args.first_seed)
    base = WanBaseModel(load_base_transformer(checkpoint / "base", preset=checkpoint_preset(checkpoint))).eval()
    joint = load_demo_pipeline(checkpoint, DemoSettings(), state=args.state).transformer.eval()
    report = {"base": one_step_errors(base, inputs, joint=False), "one4d": one_step_errors(joint, inputs, joint=True)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
