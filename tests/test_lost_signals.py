"""A SIGTERM whose exception Python drops still stops a long job (one4d.runtime.raise_if_stopped).

A signal handler's exception raised while a finaliser runs (a ``__del__``: tqdm, tempfile and torch have them) is
printed as "Exception ignored in ..." and lost; before the stop flag, a training run told to stop then trained on
to its last step (a subprocess test once timed out this way, 120 s after its SIGTERM)."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from one4d.runtime import TERMINATED, run_script


class SignalsInFinaliser:
    """Sends ``signum`` to this process from its ``__del__``: the handler runs inside the finaliser, so its exception is lost."""

    def __init__(self, signum: int):
        self.signum = signum

    def __del__(self):
        os.kill(os.getpid(), self.signum)
        sum(range(1000))  # Python code after the kill: where the handler runs, still inside the finaliser


def test_sigterm_lost_in_a_finaliser_still_stops_training(tmp_path, monkeypatch):
    from one4d.training import Trainer
    from one4d.training.testing import compose_train_config, write_synthetic_clips

    clips = write_synthetic_clips(tmp_path / "clips", count=2, num_frames=5, size=32)
    cfg = compose_train_config(["experiment=tiny_cpu", f"data.roots=[{clips}]", f"run_dir={tmp_path / 'run'}", "train.steps=40",
                                "train.checkpoint_every=0", "train.log_every=0", "train.progress_bar=false", "train.report_to=null"])
    lost = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: lost.append(unraisable.exc_type))
    trainer = None

    def main():
        nonlocal trainer
        trainer = Trainer(cfg).setup()
        train_step = trainer.train_step

        def step_then_finaliser(batches):
            losses = train_step(batches)
            if trainer.step == 2:
                SignalsInFinaliser(signal.SIGTERM)  # collected at once: SIGTERM lands in its __del__
            return losses

        trainer.train_step = step_then_finaliser
        trainer.train()

    with pytest.raises(SystemExit) as stopped:
        run_script(main)
    assert [kind.__name__ for kind in lost] == ["Terminated"]  # the handler's exception was dropped by Python
    assert stopped.value.code == TERMINATED and trainer.step == 2  # and the next step stopped the run anyway


def _lose_a_sigterm_then(job):
    """A script's main that loses a SIGTERM in a finaliser, then runs ``job`` (which must stop at its first step)."""
    def main():
        SignalsInFinaliser(signal.SIGTERM)
        job()
        raise AssertionError("the job ran to its end after a SIGTERM")
    return main


def test_sampler_and_dataset_writer_stop_at_their_next_step(tmp_path, monkeypatch):
    from one4d import demo
    from one4d.data.synthetic import write_synthetic_dataset

    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: None)
    settings = demo.DemoSettings(steps=4, postopt_iterations=2)
    pipe = demo.load_demo_pipeline(demo.CHECKPOINT, settings)
    jobs = {"sampler": lambda: demo.run_task(pipe, "single", demo.DEMO_SEEDS[0], settings, None),
            "dataset writer": lambda: write_synthetic_dataset(tmp_path / "clips", num_clips=3, num_frames=5, height=32, width=32),
            "dataset writer in 2 processes": lambda: write_synthetic_dataset(tmp_path / "clips", num_clips=3, num_frames=5,
                                                                             height=32, width=32, workers=2)}
    for name, job in jobs.items():
        with pytest.raises(SystemExit) as stopped:
            run_script(_lose_a_sigterm_then(job))
        assert stopped.value.code == TERMINATED, name
    assert not (tmp_path / "clips").exists() or not any((tmp_path / "clips").iterdir())


def test_run_script_leaves_no_handler_or_recorded_stop_behind(monkeypatch):
    from one4d.runtime import raise_if_stopped

    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: None)
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    with pytest.raises(SystemExit) as finished:
        run_script(lambda: SignalsInFinaliser(signal.SIGTERM) and None)  # lost, and nothing after it checks
    assert finished.value.code == 0
    raise_if_stopped()  # the next job, outside any script, is not stopped by the last script's signal
    assert {signum: signal.getsignal(signum) for signum in before} == before
