"""Stage 1 as its own phase: every distinct stage-1 model of a study is trained once, before the main trials.

The paper trains its discrete latent model (stage 1) once and every category's stage 2/3 starts from it; a study's
trials that agree on the stage-1 fields (`trial.STAGE1_FIELDS`) and data share one model the same way. The harness
first runs one Ray Tune experiment, `<storage>/<name>/stage1`, with one trial per distinct stage-1 key (each with
the study's per-trial resources, checkpointed and retried like any trial); each writes its model to
`<storage>/<name>/stage1/<key>/latent.pt`. Only then do the main trials start, and they only load it: no trial
holds a CPU or GPU while waiting for another. A stage 1 that failed leaves `error.txt` beside where its model
would be, and the trials that need it fail at once with that error. `--resume` keeps every finished stage 1.

`--stage1-checkpoint FILE` (the reference's ImageNet `vq_model_pretrained_128_4096.pckl`, or one of ours) replaces
the phase: the file is checked against every stage-1 configuration of the study and stored as each one's model.

One stage 1 for every study: each model the phase trains is also published to `<storage>/stage1_store/<key>/`,
shared by every experiment under the same storage root. A later study that needs the same key (same stage-1
fields, same data: `trial.stage1_key`) copies it from there instead of training it, and records that in
`<key>/reused.json`. A stored model that does not load or does not fit its configuration is never used.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

import torch
from pyarrow import fs as pafs

from dsr.checkpoints import load_stage1_checkpoint
from dsr.model import DSR
from dsr.training import StageEvent, TrainingData, run_stages
from studies.runner.storage import storage_filesystem
from studies.runner.trial import RunSettings, local_trial, resolve_config, stage1_images, stage1_key

PHASE = "stage1"  # the phase's Tune experiment, a folder of the study's experiment
STORE = "stage1_store"  # stage-1 models shared by every experiment under one storage root
LATENT_FILE = "latent.pt"
ERROR_FILE = "error.txt"
REUSED_FILE = "reused.json"  # beside a latent.pt copied from the store: where from


class Stage1Missing(RuntimeError):
    """A trial's stage-1 model is not in storage: its stage 1 failed (the message says why) or never ran."""


# ------------------------------------------------------------------------------------------------- storage


def _location(settings: RunSettings, key: str, file_name: str, store: bool = False) -> tuple[pafs.FileSystem, str]:
    filesystem, root = storage_filesystem(settings.storage)
    folder = STORE if store else f"{settings.experiment}/{PHASE}"
    return filesystem, f"{root}/{folder}/{key}/{file_name}"


def _read(settings: RunSettings, key: str, file_name: str, store: bool = False) -> bytes | None:
    filesystem, path = _location(settings, key, file_name, store)
    if filesystem.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    with filesystem.open_input_stream(path) as stream:
        return stream.read()


def _write(settings: RunSettings, key: str, file_name: str, payload: bytes, store: bool = False) -> None:
    """Write through a temporary name, then move: a reader never sees a half-written file."""
    filesystem, path = _location(settings, key, file_name, store)
    filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    partial = f"{path}.partial"
    with filesystem.open_output_stream(partial) as stream:
        stream.write(payload)
    filesystem.move(partial, path)


def _delete(settings: RunSettings, key: str, file_name: str) -> None:
    filesystem, path = _location(settings, key, file_name)
    if filesystem.get_file_info(path).type != pafs.FileType.NotFound:
        filesystem.delete_file(path)


def has_latent(settings: RunSettings, key: str) -> bool:
    filesystem, path = _location(settings, key, LATENT_FILE)
    return filesystem.get_file_info(path).type == pafs.FileType.File


def write_latent(settings: RunSettings, key: str, latent_state: dict[str, torch.Tensor]) -> None:
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in latent_state.items()}, buffer)
    _write(settings, key, LATENT_FILE, buffer.getvalue())
    _delete(settings, key, ERROR_FILE)


def publish(settings: RunSettings, key: str) -> None:
    """Copy the experiment's trained stage-1 model of `key` into the storage root's shared store."""
    payload = _read(settings, key, LATENT_FILE)
    if payload is not None and _read(settings, key, REUSED_FILE) is None:
        _write(settings, key, LATENT_FILE, payload, store=True)


def reuse_stored(settings: RunSettings, jobs: dict[str, dict[str, Any]], keys: list[str]) -> list[str]:
    """Copy every key's model from the shared store into the experiment where the store has one that loads and
    fits its configuration (a corrupt or foreign file is skipped, with a line); returns the keys reused."""
    reused = []
    for key in keys:
        payload = _read(settings, key, LATENT_FILE, store=True)
        if payload is None:
            continue
        try:
            latent = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
            DSR(resolve_config(jobs[key])).latent.load_state_dict(latent)  # strict: every tensor, every shape
        except Exception as error:  # never use a model that does not load or fit: train it again
            print(f"stage 1 {key}: the stored model in {STORE}/ is not usable ({type(error).__name__}: "
                  f"{str(error).splitlines()[0] if str(error) else ''}); training it", flush=True)
            continue
        write_latent(settings, key, latent)
        _write(settings, key, REUSED_FILE, json.dumps({"from": f"{STORE}/{key}/{LATENT_FILE}"}).encode())
        reused.append(key)
    return reused


def load_latent(settings: RunSettings, key: str) -> dict[str, torch.Tensor]:
    """The stage-1 model of `key` from storage; Stage1Missing with its stage-1 error when there is none."""
    payload = _read(settings, key, LATENT_FILE)
    if payload is not None:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    error = _read(settings, key, ERROR_FILE)
    if error is not None:
        raise Stage1Missing(f"stage 1 {key} failed, so this trial cannot run: {error.decode().strip()}")
    raise Stage1Missing(f"stage 1 {key} has no model in {settings.storage}/{settings.experiment}/{PHASE} "
                        f"(its phase did not finish: resume the study with --resume)")


def record_failure(settings: RunSettings, key: str, error: str) -> None:
    _write(settings, key, ERROR_FILE, error.strip().encode())


# ---------------------------------------------------------------------------------------------------- plan


def phase_cpus(models: int, cpus_per_trial: float, gpus_per_trial: float, asked: float,
               node_cpus: list[float]) -> float:
    """CPUs for each model of a stage-1 phase of `models` models.

    `asked` (--stage1-cpus) > 0 is taken as given. Otherwise a CPU phase shares the cluster's CPUs among its models,
    at most one node's worth each (a trial runs on one node) and never less than a main trial's: the default study
    has one stage-1 model, which would else run on one core while the others idle (measured on a 2-core AMD EPYC:
    99 ms a small-preset stage-1 step on one thread, 67 ms on two). A GPU phase keeps the main trials' share.
    """
    if asked > 0:
        return asked
    if gpus_per_trial > 0 or models < 1 or not node_cpus:
        return cpus_per_trial
    share = min(math.floor(sum(node_cpus) / models), math.floor(max(node_cpus)))
    return max(cpus_per_trial, float(share))


def plan(points: list[dict[str, Any]], settings: RunSettings) -> dict[str, dict[str, Any]]:
    """Every distinct stage-1 key of the study's trial configurations -> one trial config that needs it."""
    jobs: dict[str, dict[str, Any]] = {}
    fingerprints: dict[str, str] = {}  # each data root walked once, however many configurations share it
    for point in points:
        jobs.setdefault(stage1_key(resolve_config(point), settings, point, fingerprints), point)
    return jobs


def install_checkpoint(path: str, jobs: dict[str, dict[str, Any]], settings: RunSettings) -> None:
    """--stage1-checkpoint: check the file against each stage-1 configuration and store it as its model.
    ValueError (one line, naming the file and what does not fit) when the config does not fit it."""
    for key, point in jobs.items():
        config = resolve_config(point)
        model = DSR(config)
        try:
            load_stage1_checkpoint(model.latent, path)
        except (ValueError, FileNotFoundError) as error:
            raise ValueError(f"--stage1-checkpoint {path}: {str(error).splitlines()[0]} (the study's "
                             f"config: vq_hidden={config.vq_hidden}, embedding_dim={config.embedding_dim}, "
                             f"codebook_size={config.codebook_size})") from None
        if not has_latent(settings, key):
            write_latent(settings, key, model.latent.state_dict())


# ---------------------------------------------------------------------------------------------- the trial


def stage1_trial(config: dict[str, Any], settings: RunSettings, jobs: dict[str, dict[str, Any]]) -> None:
    """Tune trainable of the phase: train stage 1 for `config["stage1_key"]` (resuming from its checkpoint; the
    trial config it stands for is `jobs[key]`) and write the model to storage. Reports stage-1 losses as it
    goes, then {"stage": "done"}."""
    from studies.runner import tune_io  # Ray: only inside the phase's trials

    key = config["stage1_key"]
    trial = local_trial(jobs[key])
    device = tune_io.start_trial()
    identity = {"stage1_key": key, **tune_io.trial_hardware(device)}
    if has_latent(settings, key):  # finished before a restart
        tune_io.report({"stage": "done", **identity})
        return
    dsr_config = resolve_config(trial)
    torch.manual_seed(dsr_config.seed)
    model = DSR(dsr_config).to(device)

    def on_event(event: StageEvent) -> None:
        tune_io.report({**tune_io.event_metrics(event), **identity}, event.state)

    images = TrainingData(stage1_images(trial, dsr_config, settings))
    run_stages(["stage1"], model, images, resume=tune_io.restored_state(), callback=on_event,
               schedule=tune_io.loop_schedule(settings), device=device, progress=False)
    write_latent(settings, key, model.latent.state_dict())
    tune_io.report({"stage": "done", **identity})


__all__ = ["PHASE", "STORE", "Stage1Missing", "phase_cpus", "plan", "install_checkpoint", "stage1_trial", "load_latent",
           "has_latent", "write_latent", "record_failure", "publish", "reuse_stored"]
