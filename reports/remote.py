"""Experiments in cloud storage (s3://, gs://): fetch what a report reads into a local folder, put the report back.

A report needs each trial's results and its saved evaluation records, never the models: the copy leaves out the
model and training-state files (`*.pt`), which are most of an experiment's bytes. Endpoints and credentials come
from pyarrow's usual sources (the environment, ~/.aws, an instance profile; `AWS_ENDPOINT_URL` for S3-compatible
servers).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs


SKIPPED_SUFFIXES = (".pt", ".pckl", ".partial")  # models and training states: not read by reports


def fetch_experiment(uri: str, into: Path) -> Path:
    """Copy the report-relevant files under `uri` into the folder `into`; returns `into`.
    Raises FileNotFoundError (one line) when nothing is at the URI."""
    try:
        filesystem, root = pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as error:
        raise ValueError(f"{uri}: not a location pyarrow can open ({' '.join(str(error).split())[:200]})") from None
    root = root.rstrip("/")
    if filesystem.get_file_info(root).type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"results directory {uri} does not exist")
    for entry in filesystem.get_file_info(pafs.FileSelector(root, recursive=True)):
        relative = entry.path[len(root):].lstrip("/")
        if entry.type != pafs.FileType.File or relative.endswith(SKIPPED_SUFFIXES) or relative.startswith("report/"):
            continue
        target = into / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        with filesystem.open_input_stream(entry.path) as source, open(target, "wb") as sink:
            sink.write(source.read())
    return into


def upload_folder(folder: Path, uri: str) -> None:
    """Copy every file of `folder` to `uri` (same relative paths)."""
    filesystem, root = pafs.FileSystem.from_uri(uri)
    pafs.copy_files(str(folder), root.rstrip("/"), source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=filesystem)
