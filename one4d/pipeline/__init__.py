"""Sampling: One4DPipeline (diffusers shape), input fitting, loading local weights, and the 4D output folder."""

from .evaluation import ModelPredictor, build_eval_predictor
from .loading import build_scheduler, load_pipeline
from .pipeline import One4DPipeline, One4DPipelineOutput

__all__ = ["ModelPredictor", "build_eval_predictor", "One4DPipeline", "One4DPipelineOutput", "build_scheduler", "load_pipeline"]
