"""Staged DSR training: stage 1 (discrete latent model), stage 2 (restriction, object decoder, detection),
stage 3 (upsampling module), in one resumable loop (`run_stages`) whose checkpoints go where its callback says."""

from dsr.training.loop import Schedule, StageEvent, learning_rate, run_stage, run_stages, stage_iterations
from dsr.training.pipeline import TrainedRun, stages_for, train_dsr
from dsr.training.state import STAGES, load_state, model_from_state, save_state
from dsr.training.steps import TrainingData, trained_modules

__all__ = [
    "STAGES", "Schedule", "StageEvent", "TrainedRun", "TrainingData", "learning_rate", "load_state",
    "model_from_state", "run_stage", "run_stages", "save_state", "stage_iterations", "stages_for", "train_dsr",
    "trained_modules",
]
