"""Caption the clips of a converted clip root with a local vision-language model (writes each clip's meta.json).

    python scripts/caption_clips.py clips=/data/clips/spatialvid captioner.model=/models/Qwen2.5-VL-7B-Instruct
        [captioner.frames=4 captioner.batch_size=4 captioner.prompt="..." overwrite=false limit=null]

See configs/caption.yaml and one4d/data/captioner.py; bad input exits with code 2 and one line on stderr.
"""

import hydra
from omegaconf import DictConfig

from one4d.runtime import check_required, configure_cpu_threads, one_line_errors, run_script


@hydra.main(config_path="../configs", config_name="caption", version_base="1.3")
@one_line_errors
def main(cfg: DictConfig) -> None:
    check_required(cfg)
    from one4d.data.captioner import VLMCaptioner, caption_root, check_model_folder  # after the config composed

    options = cfg.captioner
    configure_cpu_threads(cfg.threads)
    check_model_folder(options.model)
    report = caption_root(
        cfg.clips,
        lambda: VLMCaptioner(options.model, options.prompt, options.max_new_tokens, options.device, options.dtype),
        frames=options.frames, batch_size=options.batch_size, overwrite=cfg.overwrite, limit=cfg.limit,
    )
    print(report.summary())


if __name__ == "__main__":
    run_script(main)
