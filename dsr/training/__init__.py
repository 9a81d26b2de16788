"""Staged DSR training: stage 1 (discrete latent model), stage 2 (restriction, object decoder, detection),
stage 3 (upsampling module), each resumable from its state."""

from dsr.training.loop import StageEvent, learning_rate, run_stage, stage_iterations
from dsr.training.pipeline import TrainedRun, train_dsr
from dsr.training.state import STAGES, load_state, model_from_state, save_state
from dsr.training.steps import TrainingData, trained_modules

__all__ = [
    "STAGES", "StageEvent", "TrainedRun", "TrainingData", "learning_rate", "load_state", "model_from_state",
    "run_stage", "save_state", "stage_iterations", "train_dsr", "trained_modules",
]
