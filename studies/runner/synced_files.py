"""Files the driver writes during a run and keeps with the experiment (the Optuna journal, the MLflow database):
in the experiment folder itself when that is a local path; with cloud storage, in a local cache (one folder per
experiment, downloaded first when the experiment already holds the file: a resume) and uploaded by `FileSync`
when a trial ends and when the run ends."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ray import tune

from dsr.locations import is_remote


def location(experiment: str, relative: str) -> str:
    """Where the file lives with the experiment (a path or a URI)."""
    return f"{experiment.rstrip('/')}/{relative}"


def local_copy(experiment: str, relative: str, cache_dir: str | Path | None = None) -> Path:
    """The file the driver writes (its folder created): see the module's docstring."""
    if not is_remote(experiment):
        path = Path(location(experiment, relative).removeprefix("file://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return path
    from studies.runner.storage import default_cache_dir, exists, storage_filesystem

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir().parent / "experiments"
    path = root / hashlib.sha256(experiment.encode()).hexdigest()[:16] / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    remote = location(experiment, relative)
    if exists(remote):
        filesystem, source = storage_filesystem(remote)
        with filesystem.open_input_stream(source) as stream:
            path.write_bytes(stream.read())
    return path


def upload(local: str | Path, experiment: str, relative: str) -> None:
    """Copy the driver's file to the experiment (a no-op for a local experiment: it is written there)."""
    if not is_remote(experiment) or not Path(local).is_file():
        return
    from studies.runner.storage import storage_filesystem

    filesystem, target = storage_filesystem(location(experiment, relative))
    filesystem.create_dir(target.rsplit("/", 1)[0], recursive=True)
    with filesystem.open_output_stream(target) as stream:
        stream.write(Path(local).read_bytes())


class FileSync(tune.Callback):
    """Uploads one driver-side file to the experiment when a trial ends and when the run ends."""

    def __init__(self, local: str | Path, experiment: str, relative: str) -> None:
        self.local, self.experiment, self.relative = str(local), experiment, relative

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        upload(self.local, self.experiment, self.relative)

    def on_experiment_end(self, trials, **info) -> None:
        upload(self.local, self.experiment, self.relative)


__all__ = ["FileSync", "local_copy", "location", "upload"]
