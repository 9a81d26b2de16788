"""Live tracking of a study's trials: `--tracker mlflow` (Ray Tune's MLflowLoggerCallback: one MLflow run per
trial, its config as parameters, every result as metrics on the trial's training iteration).

The default tracking URI is a local MLflow store inside the experiment: one SQLite file, `<experiment>/mlflow.db`
(MLflow 3 keeps its plain-folder `mlruns` store in maintenance mode and refuses it by default; with cloud storage
the file is written in a local cache and uploaded beside the results like the Optuna journal). Any other store
with `--tracking-uri` (e.g. an MLflow server). Watch it with
`mlflow ui --backend-store-uri sqlite:///<experiment>/mlflow.db`. Tune also writes TensorBoard event files into
every trial folder (`events.out.tfevents.*`): `tensorboard --logdir <experiment>`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from studies.runner.study import StudyError

TRACKERS = ("none", "mlflow")
MLFLOW_DB = "mlflow.db"


def add_tracker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracker", default="none", choices=TRACKERS, help="live tracking of every trial: "
                        "mlflow (a local store, <experiment>/mlflow.db, unless --tracking-uri); Tune's "
                        "TensorBoard files are always written (tensorboard --logdir EXPERIMENT)")
    parser.add_argument("--tracking-uri", metavar="URI", help="with --tracker mlflow: the MLflow tracking URI "
                        "(default: sqlite:///<experiment>/mlflow.db)")


def check_tracker(args: argparse.Namespace) -> None:
    """StudyError (one line naming the option) for a tracking URI without a tracker, or MLflow not installed."""
    tracker = getattr(args, "tracker", "none")
    if getattr(args, "tracking_uri", None) and tracker != "mlflow":
        raise StudyError("--tracking-uri is for --tracker mlflow: add --tracker mlflow")
    if tracker == "mlflow":
        try:
            import mlflow  # noqa: F401
        except ImportError:
            raise StudyError("--tracker mlflow: mlflow is not installed (pip install mlflow-skinny)") from None


def tracking_uri(args: argparse.Namespace, experiment: str, cache_dir: str | Path | None = None) -> str:
    """--tracking-uri, else the SQLite store of the experiment (its local copy when the experiment is remote)."""
    from studies.runner.synced_files import local_copy

    if args.tracking_uri:
        return args.tracking_uri
    return f"sqlite:///{local_copy(experiment, MLFLOW_DB, cache_dir).resolve()}"


def tracker_callbacks(args: argparse.Namespace, experiment: str, name: str) -> list:
    """The Tune callbacks of `--tracker` (none: []): MLflow's logger, and the upload of its default store."""
    if getattr(args, "tracker", "none") != "mlflow":
        return []
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    from studies.runner.synced_files import FileSync

    uri = tracking_uri(args, experiment)
    print(f"tracker: MLflow at {uri} (experiment {name}; mlflow ui --backend-store-uri {uri})", flush=True)
    callbacks = [MLflowLoggerCallback(tracking_uri=uri, experiment_name=name, save_artifact=False)]
    if not args.tracking_uri:
        callbacks.append(FileSync(uri.removeprefix("sqlite:///"), experiment, MLFLOW_DB))
    return callbacks


__all__ = ["MLFLOW_DB", "TRACKERS", "add_tracker_arguments", "check_tracker", "tracker_callbacks", "tracking_uri"]
