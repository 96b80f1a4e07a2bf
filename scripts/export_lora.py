"""Export the RGB LoRA of a One4D checkpoint for diffusers and ComfyUI.

    python scripts/export_lora.py checkpoint=outputs/train/run out=outputs/rgb_lora

Writes ``out/pytorch_lora_weights.safetensors`` (``WanImageToVideoPipeline.load_lora_weights``) and
``out/lora_diffusion_pytorch_model_compatible_with_comfyui.safetensors`` (ComfyUI's Wan LoRA loaders; VideoX-Fun's
key names), reading only the trainable state: no base weights are needed. Bad input: one line on stderr, exit 2.
"""

import sys

import hydra
from omegaconf import DictConfig

from one4d.models.state import export_rgb_lora_from_state


@hydra.main(config_path="../configs", config_name="export_lora", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from one4d.pipeline.loading import resolve_state_folder

    try:
        paths = export_rgb_lora_from_state(resolve_state_folder(cfg.checkpoint), cfg.out)
    except ValueError as error:  # bad input: one clear line, exit 2
        print(f"error: {str(error).splitlines()[0]}", file=sys.stderr)
        sys.exit(2)
    print("wrote " + " and ".join(str(path) for path in paths))


if __name__ == "__main__":
    main()
