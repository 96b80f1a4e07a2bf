"""The One4D trainer: a class with small overridable steps (STYLE item 5), distributed through accelerate.

The same code runs on one CPU process, ``torchrun --nproc_per_node 2`` on CPU (gloo) and a GPU
cluster, with plain DDP or DeepSpeed ZeRO-2/3 (``launcher`` config group). It talks to the model only
through :class:`JointFlowAdapter`, so DLC and the concatenation baselines train the same way.

Precision: the frozen base is stored in ``model.dtype`` (bf16 for the big presets) and the trainable
weights in fp32. DeepSpeed runs in its fp32 mode on purpose: its bf16 mode would cast the trainable
weights (and diffusers' fp32-kept norms) to bf16. The heavy matmuls still run in bf16 because the base
weights are bf16; ``train.mixed_precision=bf16`` adds autocast for the rest under DDP.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DeepSpeedPlugin, DistributedType, InitProcessGroupKwargs
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from one4d.encoding import Encoders, load_encoders, vae_fingerprint
from one4d.models.state import check_trainable_state, load_trainable_state, save_trainable_state
from one4d.runtime import raise_if_stopped

from . import checkpointing
from .adapter import JointFlowAdapter
from one4d.storage import check_precision, enable_fp8_base_storage, storage_dtype, torch_dtype

from .builders import (
    ShardedBatches, StepDraws, build_dataset, build_joint_model, build_objective, encoder_dtype, encoder_settings, step_generator,
)

logger = logging.getLogger(__name__)


def lr_multiplier(step: int, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Linear warmup to 1, then "constant", "linear" decay to 0 or "cosine" decay to 0 at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))


def require_deepspeed() -> None:
    """DeepSpeed is the optional extra ``.[train]`` (sampling and evaluation install without it): one line if it is absent."""
    try:
        import deepspeed  # noqa: F401
    except ImportError as error:
        raise ValueError(f"launcher=deepspeed_zero2/3 needs DeepSpeed, which is not installed ({error}): "
                         "pip install -e '.[train]'") from None


def check_config(cfg, world_size: int) -> int:
    """Refuse values that cannot train, with one line naming the key; returns the per-process batch size."""
    train = cfg.train
    if not train.lr > 0:
        raise ValueError(f"train.lr must be positive, got {train.lr}")
    if train.steps < 1 or train.grad_accum < 1:
        raise ValueError(f"train.steps and train.grad_accum must be at least 1, got {train.steps} and {train.grad_accum}")
    if train.lr_schedule not in ("constant", "linear", "cosine"):
        raise ValueError(f"train.lr_schedule must be constant, linear or cosine, got {train.lr_schedule!r}")
    batch_size = int(train.batch_size)
    if train.get("global_batch_size") is not None:
        if train.global_batch_size % world_size:
            raise ValueError(f"train.global_batch_size={train.global_batch_size} does not divide across {world_size} processes")
        batch_size = int(train.global_batch_size) // world_size
    if batch_size < 1:
        raise ValueError(f"train.batch_size must be at least 1, got {batch_size}")
    if cfg.launcher.kind not in ("single", "ddp", "deepspeed"):
        raise ValueError(f"launcher.kind must be single, ddp or deepspeed, got {cfg.launcher.kind!r}")
    zero3 = cfg.launcher.kind == "deepspeed" and int(cfg.launcher.deepspeed.zero_optimization.stage) == 3
    if cfg.model.get("base_storage_dtype") and zero3:
        raise ValueError("model.base_storage_dtype (fp8 base) needs launcher=deepspeed_zero2 or ddp: ZeRO-3 partitions the frozen base itself")
    if train.get("compile") and zero3:
        raise ValueError("train.compile needs launcher=single, ddp or deepspeed_zero2: ZeRO-3 gathers each block's weights in "
                         "hooks that a compiled block would trace")
    if cfg.model.get("base_storage_dtype") and cfg.model.architecture == "base":
        raise ValueError("model.base_storage_dtype stores a FROZEN base in fp8; model.architecture=base trains every weight: unset it")
    return batch_size


def check_resumable(folder: Path, state: dict, run: dict) -> None:
    """Refuse, in one line, a checkpoint this run cannot continue exactly; ``run``: this run's ``world_size``,
    ``batch_size``, ``grad_accum``, ``seed`` and ``zero_stage`` (None without DeepSpeed), ``state``: the checkpoint's
    (``trainer.json``).

    The data order (:class:`ShardedBatches`) and every sample's draws (:class:`StepDraws`, keyed by step and micro
    step) depend on the GLOBAL batch, the accumulation and the seed only, so a run continues on any number of
    processes with the same ``world_size x batch``. Single-process and DDP checkpoints hold the whole optimizer
    state; DeepSpeed's ZeRO partitions of another process count load as a universal checkpoint
    (:meth:`Trainer.load_deepspeed_state`).
    """
    written_by_deepspeed = checkpointing.written_by_deepspeed(folder)
    if written_by_deepspeed != (run["zero_stage"] is not None):
        wanted = "launcher=deepspeed_zero2 or deepspeed_zero3" if written_by_deepspeed else "launcher=single or ddp"
        raise ValueError(f"checkpoint {folder} was written {'under' if written_by_deepspeed else 'without'} DeepSpeed; "
                         f"resume it with {wanted}")
    if state["world_size"] * state["batch_size"] != run["world_size"] * run["batch_size"]:
        raise ValueError(f"checkpoint {folder} was written with a global batch of {state['world_size']} processes x "
                         f"{state['batch_size']}; this run has {run['world_size']} x {run['batch_size']}: the data order "
                         f"would not continue (set train.global_batch_size={state['world_size'] * state['batch_size']})")
    for key in ("grad_accum", "seed"):  # checkpoints from before 2026-12-06 record no grad_accum
        if key in state and state[key] != run[key]:
            raise ValueError(f"checkpoint {folder} was written with train.{key}={state[key]}; this run has {run[key]}: "
                             f"its batches and draws would not continue (set train.{key}={state[key]})")
    if state.get("zero_stage") is not None and state["zero_stage"] != run["zero_stage"]:  # ZeRO-2 and -3 files differ
        raise ValueError(f"checkpoint {folder} was written under ZeRO-{state['zero_stage']}; resume it with "
                         f"launcher=deepspeed_zero{state['zero_stage']}")


class Trainer:
    """Builds everything from a composed config, then ``train()``; each step is a method to override."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.run_dir = Path(cfg.run_dir)
        self.checkpoint_root = self.run_dir / "checkpoints"
        self.step = 0  # optimizer steps done
        self.batches_consumed = 0  # batches this process has drawn (the data-order state)
        self.skipped_clips = 0  # bad clips the dataset skipped and replaced (counted per batch)
        self.losses: list[float] = []  # every step's loss since step 0, averaged over processes (in each checkpoint)
        self.resume_from: Path | None = None  # the checkpoint setup() continues (train.resume)

    # ------------------------------------------------------------------ setup

    def setup(self) -> "Trainer":
        cfg = self.cfg
        # before anything is written, and before the engine's config (a DeepSpeed resume on another count loads universally)
        self.resume_from = checkpointing.resolve_resume(cfg.train.resume, self.checkpoint_root)
        self.accelerator = self.build_accelerator()
        self.rank, self.world_size = self.accelerator.process_index, self.accelerator.num_processes
        self.batch_size = check_config(cfg, self.world_size)
        if self.resume_from is not None:  # a checkpoint this run cannot continue: one line before any weights load
            run = {"world_size": self.world_size, "batch_size": self.batch_size, "grad_accum": int(cfg.train.grad_accum),
                   "seed": int(cfg.train.seed), "zero_stage": self.zero_stage()}
            check_resumable(self.resume_from, checkpointing.trainer_state(self.resume_from), run)
        if cfg.model.architecture != "base":  # which base will be fine-tuned, before any data or weights are read
            from one4d.weights import base_transformer_source

            base_transformer_source(cfg.model.preset, cfg.model.get("transformer"), cfg.model.components,
                                    bool(cfg.model.get("transformer_from_components", False)))
        storage = storage_dtype(cfg.model.get("base_storage_dtype"))
        check_precision(torch_dtype(cfg.model.dtype), self.accelerator.device, storage)
        vae = vae_fingerprint(cfg.model.components, int(cfg.model.components_seed), encoder_settings(cfg.model)) if cfg.data.get("cache") else None
        self.dataset = build_dataset(cfg.data, seed=int(cfg.train.seed), vae_fingerprint=vae)  # bad data: no run folder yet
        if self.accelerator.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
            print(f"run directory: {self.run_dir}" + (f" (resuming {self.resume_from})" if self.resume_from else ""), flush=True)

        self.order = ShardedBatches(len(self.dataset), self.batch_size, self.rank, self.world_size, int(cfg.train.seed))
        torch.manual_seed(int(cfg.train.seed))  # identical LoRA initialisation on every process
        self.model = self.build_model()
        if cfg.train.gradient_checkpointing:
            self.model.enable_gradient_checkpointing()
        if cfg.train.get("compile"):  # from outside the model, before the engine wraps it; compiles lazily at step 1
            from one4d.models import compile_repeated_blocks

            options = cfg.train.get("compile_options")
            compile_repeated_blocks(self.model, **(OmegaConf.to_container(options, resolve=True) if options else {}))
        self.adapter = self.build_adapter()
        self.optimizer = torch.optim.AdamW(
            self.model.trainable_parameters(), lr=float(cfg.train.lr), betas=tuple(cfg.train.betas),
            eps=float(cfg.train.eps), weight_decay=float(cfg.train.weight_decay),
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.lr_lambda)
        if self.is_zero3():
            self.register_zero3_external_parameters(self.model)
        self.model, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)
        if storage is not None:  # after prepare: DDP / DeepSpeed broadcast the bf16 weights (gloo has no fp8)
            enable_fp8_base_storage(self.unwrapped_model(), storage)
        if self.resume_from is not None:
            self.load_checkpoint(self.resume_from)
        if cfg.train.report_to:
            self.accelerator.init_trackers("one4d", config=scalar_hparams(cfg))
        return self

    def build_model(self):
        """The model this trainer trains (a joint RGB+XYZ architecture of ``cfg.model``); subclasses swap it."""
        return build_joint_model(self.cfg.model)

    def lr_lambda(self, step: int) -> float:
        train = self.cfg.train
        return lr_multiplier(step, int(train.warmup_steps), int(train.steps), train.lr_schedule)

    def build_accelerator(self) -> Accelerator:
        cfg, launcher = self.cfg, self.cfg.launcher
        kwargs = dict(
            gradient_accumulation_steps=int(cfg.train.grad_accum),
            log_with=cfg.train.report_to or None,
            project_dir=str(self.run_dir),
        )
        if launcher.kind == "deepspeed":
            require_deepspeed()
            single_process_environment()
            config = OmegaConf.to_container(launcher.deepspeed, resolve=True)
            config.update(
                # the per-process batch, also under train.global_batch_size (torchrun's WORLD_SIZE: no group exists yet)
                train_micro_batch_size_per_gpu=check_config(cfg, int(os.environ.get("WORLD_SIZE", "1"))),
                gradient_accumulation_steps=int(cfg.train.grad_accum),
                gradient_clipping=float(cfg.train.max_grad_norm),
                zero_allow_untested_optimizer=True,
                bf16={"enabled": False}, fp16={"enabled": False},  # see the module docstring
            )
            resume = self.resume_from
            if resume and checkpointing.written_by_deepspeed(resume) and \
                    checkpointing.trainer_state(resume)["world_size"] != int(os.environ.get("WORLD_SIZE", "1")):
                config.setdefault("checkpoint", {})["load_universal"] = True  # ZeRO partitions of another process count
            kwargs["deepspeed_plugin"] = DeepSpeedPlugin(hf_ds_config=config)
            if not torch.cuda.is_available():
                # accelerate leaves the backend unset on CPU; gloo makes it count the processes.
                kwargs["kwargs_handlers"] = [InitProcessGroupKwargs(backend="gloo")]
                announce_extension_build("deepspeed_shm_comm")
        else:
            kwargs["mixed_precision"] = cfg.train.mixed_precision
            kwargs["cpu"] = not torch.cuda.is_available()
        return Accelerator(**kwargs)

    def build_adapter(self) -> JointFlowAdapter:
        """Encoders for raw clips; with a cache, only what the cache stores (no VAE or text encoder)."""
        cfg = self.cfg
        empty_prompt, encoders = None, Encoders()
        if cfg.data.get("cache"):
            empty_prompt = self.dataset.empty_prompt
        else:
            with self.frozen_module_context():  # frozen encoders are used outside the engine: never partitioned
                encoders = load_encoders(cfg.model.components, dtype=encoder_dtype(cfg.model),
                                         seed=int(cfg.model.components_seed)).to(self.accelerator.device)
        return JointFlowAdapter(
            build_objective(cfg.train), encoders, empty_prompt=empty_prompt, prompt_dropout=float(cfg.train.prompt_dropout),
            sample_posterior=bool(cfg.data.sample_posterior), condition_fill=float(cfg.model.condition_fill),
        )

    # ------------------------------------------------------------------ data

    def batches(self):
        """Endless batches in the data order, starting after the ones already consumed (resume)."""
        while True:
            epoch, skip = divmod(self.batches_consumed, self.order.batches_per_epoch)
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(epoch)
            loader = DataLoader(self.dataset, batch_sampler=self.order.epoch_batches(epoch)[skip:],
                                num_workers=int(self.cfg.data.num_workers))
            for batch in loader:
                self.batches_consumed += 1
                if "skipped" in batch:  # bad clips each worker replaced by another one (logged once there)
                    self.skipped_clips += int(torch.as_tensor(batch["skipped"]).sum())
                yield batch

    # ------------------------------------------------------------------ steps

    def forward_backward_step(self, batch: dict, micro_step: int) -> dict:
        """Prepare, forward, loss, backward for one micro-batch; returns the detached losses."""
        # The global batch's draws, of which this process keeps its samples: any process count draws the same (StepDraws)
        draws = StepDraws(step_generator(int(self.cfg.train.seed), self.step, micro_step), self.rank, self.world_size)
        prepared = self.adapter.prepare_batch(batch, self.accelerator.device, draws)
        with self.accelerator.autocast():
            predictions, targets, weights = self.adapter.forward(self.model, prepared, draws)
        loss, parts = self.adapter.objective.loss(predictions, targets, weights)
        self.accelerator.backward(loss)
        return {"loss": loss.detach(), **{f"loss_{key}": value for key, value in parts.items()}}

    def train_step(self, batches) -> dict:
        """One optimizer step over ``grad_accum`` micro-batches; returns the mean losses of this process."""
        totals: dict[str, torch.Tensor] = {}
        accumulation = int(self.cfg.train.grad_accum)
        self.model.train()
        for micro_step in range(accumulation):
            with self.accelerator.accumulate(self.model):
                losses = self.forward_backward_step(next(batches), micro_step)
                if self.accelerator.sync_gradients and self.accelerator.distributed_type != DistributedType.DEEPSPEED:
                    self.accelerator.clip_grad_norm_(self.model.parameters(), float(self.cfg.train.max_grad_norm))
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            for key, value in losses.items():
                totals[key] = totals.get(key, 0.0) + value / accumulation
        self.scheduler.step()
        self.step += 1
        return totals

    def train(self) -> dict:
        """Run until ``train.steps``; checkpoints, logs and validation samples on their schedules."""
        cfg, accelerator = self.cfg.train, self.accelerator
        batches = self.batches()
        progress = tqdm(total=int(cfg.steps), initial=self.step, disable=not (accelerator.is_main_process and cfg.progress_bar),
                        desc="train", dynamic_ncols=True)
        samples_per_step = self.batch_size * self.world_size * int(cfg.grad_accum)
        history = []
        while self.step < int(cfg.steps):
            raise_if_stopped()  # a SIGTERM whose exception a finaliser swallowed still stops the run (one4d.runtime)
            started = time.perf_counter()
            losses = self.train_step(batches)
            seconds = time.perf_counter() - started
            loss = float(accelerator.reduce(losses["loss"].reshape(1), "mean"))  # the global batch's, as one process has it
            history.append(loss)
            self.losses.append(loss)
            lr = self.scheduler.get_last_lr()[0]
            progress.update(1)
            progress.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", step_s=f"{seconds:.2f}", samples_s=f"{samples_per_step / seconds:.1f}")
            if cfg.log_every and self.step % int(cfg.log_every) == 0:
                self.log({key: float(accelerator.reduce(value.reshape(1), "mean")) for key, value in losses.items()}
                         | {"lr": lr, "step_seconds": seconds, "samples_per_second": samples_per_step / seconds,
                            "skipped_clips": self.skipped_clips})
            if (cfg.checkpoint_every and self.step % int(cfg.checkpoint_every) == 0) or self.step == int(cfg.steps):
                self.save_checkpoint()
            if cfg.validate_every and self.step % int(cfg.validate_every) == 0:
                self.validate()
        progress.close()
        return {"losses": history, "step": self.step}

    def close(self) -> None:
        """End the run: trackers, model and process group (read weights before; ``train`` has saved them).

        The engine and model are released and collected while the interpreter is whole, not during its exit: ZeRO-3
        keeps its model on a module-level stack otherwise, and a two-process ZeRO-3 test run once aborted at exit
        ("terminate called without an active exception", suspected: gloo work freed from a C++ thread). Under
        ZeRO-3 with gradient accumulation DeepSpeed's C++ autograd hooks still hold the engine.
        """
        accelerator = self.accelerator
        if self.is_zero3():
            forget_zero3_module(self.unwrapped_model())
        accelerator.free_memory()  # DeepSpeed: engine.destroy(); and accelerate's references to models and optimizers
        self.model = self.optimizer = self.scheduler = None  # the trainer's references are the last ones
        gc.collect()
        accelerator.end_training()
        from one4d.parallel.layout import stop

        stop()  # a resume's long-timeout wait group goes with the process group

    def log(self, values: dict) -> None:
        if self.cfg.train.report_to:
            self.accelerator.log(values, step=self.step)
        if self.accelerator.is_main_process:
            logger.info("step %d %s", self.step, " ".join(f"{key}={value:.4g}" for key, value in values.items()))

    # ------------------------------------------------------------------ checkpoints

    def unwrapped_model(self):
        return self.accelerator.unwrap_model(self.model)

    def trainable_weights(self) -> dict[str, torch.Tensor]:
        """Full trainable weights on this process (ZeRO-3 partitions are gathered first: a collective)."""
        model = self.unwrapped_model()
        if self.is_zero3():
            import deepspeed

            with deepspeed.zero.GatheredParameters(model.trainable_parameters()):
                return {name: value.detach().clone() for name, value in model.trainable_state_dict().items()}
        return {name: value.detach().clone() for name, value in model.trainable_state_dict().items()}

    @contextlib.contextmanager
    def frozen_module_context(self):
        """Build frozen encoders outside ZeRO-3's ``zero.Init``: they run outside the DeepSpeed engine, so they must
        not be partitioned. transformers decides by a global DeepSpeed config that accelerate (1.15) registers even
        for ``zero3_init_flag=False``, so it is unset here and restored afterwards."""
        plugin = self.accelerator.state.deepspeed_plugin if self.accelerator.distributed_type == DistributedType.DEEPSPEED else None
        if plugin is None:
            yield
            return
        from transformers.integrations import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()
        try:
            yield
        finally:
            plugin.set_deepspeed_weakref()

    @staticmethod
    def register_zero3_external_parameters(model) -> None:
        """ZeRO-3 gathers a parameter only when its owning module runs; the joint models read the base's output
        modulation table outside ``base.forward``, so it is registered with the module that uses it."""
        import deepspeed

        deepspeed.zero.register_external_parameter(model, model.base.scale_shift_table)

    def zero_stage(self) -> int | None:
        """DeepSpeed's ZeRO stage, None without DeepSpeed."""
        if self.accelerator.distributed_type != DistributedType.DEEPSPEED:
            return None
        return int(self.cfg.launcher.deepspeed.zero_optimization.stage)

    def is_zero3(self) -> bool:
        return self.zero_stage() == 3

    def save_checkpoint(self) -> None:
        """Write the checkpoint of this step into a temporary folder, then publish it atomically (all processes call).
        Stopped on the way (Ctrl+C, SIGTERM: one4d.runtime), the main process removes the temporary folder."""
        folder = checkpointing.temporary_folder(self.checkpoint_root, self.step)
        try:
            self._write_and_publish_checkpoint(folder)
        except BaseException:
            if self.accelerator.is_main_process:
                shutil.rmtree(folder, ignore_errors=True)
            raise

    def _write_and_publish_checkpoint(self, folder: Path) -> None:
        accelerator, root = self.accelerator, self.checkpoint_root
        if accelerator.is_main_process:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        accelerator.wait_for_everyone()
        if accelerator.distributed_type == DistributedType.DEEPSPEED:
            self.model.save_checkpoint(str(folder / "deepspeed"), tag="state", exclude_frozen_parameters=True)
        elif accelerator.is_main_process:
            torch.save(self.optimizer.state_dict(), folder / "optimizer.pt")
        weights = self.trainable_weights() if self.is_zero3() else None  # collective under ZeRO-3
        if accelerator.is_main_process:
            save_trainable_state(self.unwrapped_model(), folder / "trainable")
            if weights is not None:  # the module holds only this process's partition
                save_file({name: value.cpu().contiguous() for name, value in weights.items()}, folder / "trainable" / "trainable_state.safetensors")
            (folder / "scheduler.json").write_text(json.dumps(self.scheduler.state_dict()))
            state = {"step": self.step, "batches_consumed": self.batches_consumed, "world_size": self.world_size,
                     "batch_size": self.batch_size, "grad_accum": int(self.cfg.train.grad_accum),
                     "seed": int(self.cfg.train.seed), "zero_stage": self.zero_stage()}
            (folder / "trainer.json").write_text(json.dumps(state, indent=1))
            (folder / "losses.json").write_text(json.dumps(self.losses) + "\n")  # the loss curve, from step 0
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state()
        save_file(rng, folder / f"rng-rank{self.rank}.safetensors")
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            self.write_sampling_file(folder)
            final = checkpointing.publish(folder, root, self.step)
            checkpointing.prune(root, int(self.cfg.train.keep_last))
            print(f"checkpoint: {final}", flush=True)
        accelerator.wait_for_everyone()

    def write_sampling_file(self, folder: Path) -> None:
        """``sampling.json``: the base, weights and training size, so ``scripts/sample.py checkpoint=<folder>`` needs
        nothing else; paths are made absolute (they were relative to where training ran)."""
        from one4d.sampling_file import MODEL_KEYS, write_sampling_file

        model = OmegaConf.to_container(self.cfg.model, resolve=True)
        model = {key: model.get(key) for key in MODEL_KEYS}
        for key in ("components", "transformer"):
            if model[key] and model[key] != "tiny":
                model[key] = str(Path(model[key]).absolute())
        data = self.cfg.data
        sampler = OmegaConf.to_container(self.cfg.sampler, resolve=True) if self.cfg.get("sampler") else {}
        write_sampling_file(folder, state="trainable", model=model, sampler=sampler,
                            trained_at={"num_frames": int(data.num_frames), "height": int(data.height), "width": int(data.width)})

    def load_checkpoint(self, folder: Path) -> None:
        """Restore weights, optimizer, scheduler, data order and RNG from a verified checkpoint (``check_resumable``)."""
        folder = Path(folder)
        state = checkpointing.trainer_state(folder)
        if self.accelerator.distributed_type == DistributedType.DEEPSPEED:
            check_trainable_state(self.unwrapped_model(), folder / "trainable")  # the engine loads by position: check first
            self.load_deepspeed_state(folder)
        else:
            load_trainable_state(self.unwrapped_model(), folder / "trainable")
            self.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
        self.scheduler.load_state_dict(json.loads((folder / "scheduler.json").read_text()))
        self.step, self.batches_consumed = int(state["step"]), int(state["batches_consumed"])
        losses_path = folder / "losses.json"  # checkpoints from before 2026-12-06 have none
        self.losses = json.loads(losses_path.read_text())[: self.step] if losses_path.is_file() else []
        rng_path = folder / f"rng-rank{self.rank}.safetensors"
        if rng_path.is_file():
            rng = load_file(rng_path)
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state(rng["cuda"])
        if self.accelerator.is_main_process:
            logger.info("resumed from %s at step %d", folder, self.step)

    def load_deepspeed_state(self, folder: Path) -> None:
        """The engine restores the trainable weights with ZeRO's fp32 masters and optimizer partitions (under ZeRO-3
        only it can: the module's weights are partitioned). Partitions of another process count load as a universal
        checkpoint: the main process converts them into ``<run>/.universal/`` while every rank waits on a long-timeout
        group (a 14B state takes minutes; a failed conversion is one line on every rank), and the copy is removed
        whatever happens."""
        options = dict(tag="state", load_module_strict=False, load_optimizer_states=True, load_lr_scheduler_states=False)
        if not self.model.load_universal_checkpoint():
            self.model.load_checkpoint(str(folder / "deepspeed"), **options)
            return
        from one4d.parallel.layout import agreed, start_process_group, wait_group

        if self.world_size > 1:
            start_process_group(self.accelerator.device)  # the process group exists: adds the long-timeout wait group
        universal, main = self.run_dir / ".universal", self.accelerator.is_main_process

        def convert():
            if main:
                checkpointing.convert_to_universal(folder / "deepspeed" / "state", universal / "state")

        try:
            agreed(self.world_size, convert, wait_group())
            self.model.load_checkpoint(str(universal), **options)
            self.accelerator.wait_for_everyone()
        finally:
            if main:
                shutil.rmtree(universal, ignore_errors=True)

    # ------------------------------------------------------------------ validation

    def validate(self) -> None:
        """A short sample of the first clip, written as RGB and depth videos under ``<run>/validation/``."""
        if self.is_zero3():
            logger.warning("validation samples are skipped under ZeRO-3 (partitioned weights)")
            return
        if self.accelerator.is_main_process:
            from .validation import write_validation_sample

            write_validation_sample(self, self.run_dir / "validation" / f"step-{self.step:07d}")
        self.accelerator.wait_for_everyone()

    def vae(self):
        """The VAE for decoding validation samples, loaded on first use in cache mode."""
        if self.adapter.encoders.vae is None:
            encoders = load_encoders(self.cfg.model.components, dtype=encoder_dtype(self.cfg.model), seed=int(self.cfg.model.components_seed))
            self.adapter.encoders.vae = encoders.vae.to(self.accelerator.device).eval()
        return self.adapter.encoders.vae


def announce_extension_build(name: str) -> None:
    """Say what a start-up may wait for: DeepSpeed on the CPU compiles its communication extension at first use,
    under a lock file in torch's extension folder; a build killed midway leaves the lock and every later start
    waits on it forever. Name the folder, and warn when a lock is already there."""
    from torch.utils.cpp_extension import _get_build_directory

    folder = Path(_get_build_directory(name, verbose=False))
    if (folder / "lock").exists():
        logger.warning("DeepSpeed's %s extension is locked by %s: if start-up hangs here, an earlier build was killed "
                       "midway; delete that file (TORCH_EXTENSIONS_DIR moves the folder)", name, folder / "lock")
    else:
        logger.info("loading DeepSpeed's %s extension from %s (the first run compiles it, about a minute)", name, folder)


def forget_zero3_module(module: torch.nn.Module) -> None:
    """ZeRO-3 pushes the model on DeepSpeed's module-level ``FWD_MODULE_STACK`` when the engine starts and never pops
    it (deepspeed/runtime/zero/parameter_offload.py), so the engine, its hooks and its communication state would
    live until interpreter exit: take it off."""
    from deepspeed.runtime.zero import parameter_offload

    parameter_offload.FWD_MODULE_STACK[:] = [entry for entry in parameter_offload.FWD_MODULE_STACK if entry is not module]


def single_process_environment() -> None:
    """Started with plain ``python`` instead of torchrun, DeepSpeed still needs a process group: make it one of one
    process on this machine (torchrun's variables, which a real launch sets and this leaves alone)."""
    if "WORLD_SIZE" in os.environ:
        return
    import socket

    with socket.socket() as probe:  # a free port on loopback for the one-process rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def scalar_hparams(cfg) -> dict:
    """Config values that TensorBoard's hparams accept (numbers, strings, bools), flattened with dots."""
    flat = {}

    def walk(node, prefix):
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, name + ".")
            elif isinstance(value, (int, float, str, bool)):
                flat[name] = value
            elif value is not None:
                flat[name] = str(value)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat


def continue_command(run_dir, overrides, world_size: int = 1) -> str:
    """The command that continues a run in ``run_dir``: its own overrides, the run folder and ``train.resume=latest``,
    on as many processes as wrote its checkpoints (torchrun's, as a module of this interpreter)."""
    import shlex

    from one4d.runtime import python_command

    kept = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in ("run_dir", "train.resume")]
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(world_size)] if world_size > 1 else []
    return " ".join([python_command(), *launcher, "scripts/train.py", *map(shlex.quote, kept), shlex.quote(f"run_dir={run_dir}"),
                     "train.resume=latest"])


def trainer_class(cfg) -> type[Trainer]:
    """The trainer of a composed config: ``model.architecture=base`` trains the plain Wan base (the tiny model's
    stage 1, :class:`one4d.training.base_model.BaseModelTrainer`); anything else a joint model (:class:`Trainer`)."""
    from one4d.models import BASE_ARCHITECTURE

    if cfg.model.architecture == BASE_ARCHITECTURE:
        from .base_model import BaseModelTrainer

        return BaseModelTrainer
    return Trainer


def run(cfg, overrides: list[str] | None = None) -> dict:
    """Build a trainer from a composed config (:func:`trainer_class`) and train (the body of ``scripts/train.py``).

    ``overrides``: the command line's, to print the command that continues this run at the end.
    """
    trainer = trainer_class(cfg)(cfg).setup()
    try:
        result = trainer.train()
    finally:
        trainer.close()
    if overrides is not None and trainer.accelerator.is_main_process:
        print(f"continue this run (e.g. with a larger train.steps): {continue_command(cfg.run_dir, overrides, trainer.world_size)}", flush=True)
    return result

