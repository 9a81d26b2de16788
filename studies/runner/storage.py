"""Where a study's files live when it leaves the machine: storage URIs, shared-storage checks and datasets on nodes.

- `is_uri` / `storage_filesystem`: a `--storage` or `--data` value is a plain path or a URI that pyarrow
  understands (s3://, gs://, ...). S3 endpoints follow pyarrow's own settings, so `AWS_ENDPOINT_URL` (or
  `AWS_ENDPOINT_URL_S3`) points every process at an S3-compatible server, e.g. the tests' loopback server.
- `require_shared_storage`: on a cluster of more than one node, a plain `--storage` path must be one filesystem
  that every node mounts; a node-local path is refused in one line before any trial starts.
- `local_dataset`: `--data s3://...` (and `--stage1-data s3://...`) is synced once per node into a local cache
  (under a file lock, checked non-empty); a plain path is used as it is. `local_file` does the same for one file
  (`--stage1-checkpoint s3://...`).
- `node_demo_root`: a demo dataset (kind demo or demo_hard) on a node that is not the driver's: built into the
  node's cache.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

import pyarrow.fs as pafs

from dsr.locations import is_remote, is_uri

SYNCED_MARKER = ".dsr_synced"  # written last into a dataset cache: its presence means the copy is complete
DATA_CACHE_ENV = "DSR_DATA_CACHE"  # where `local_dataset` keeps synced datasets (default ~/.cache/dsr/data)
SHARED_STORAGE_HELP = ("use an s3:// or gs:// URI, or a path on a filesystem every node mounts (NFS, EFS, ...; "
                       "see cluster/README.md)")


def storage_filesystem(path_or_uri: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path inside it) of a plain path (made absolute) or a URI.

    S3 credentials, region and endpoint come from pyarrow's usual sources (environment, ~/.aws, instance
    profile); `AWS_ENDPOINT_URL`/`AWS_ENDPOINT_URL_S3` override the endpoint (http:// allowed). Raises ValueError
    with one line for a URI pyarrow cannot open.
    """
    text = str(path_or_uri)
    location = text if is_uri(text) else str(Path(text).expanduser().resolve())
    try:
        return pafs.FileSystem.from_uri(location)
    except (ValueError, OSError, TypeError) as err:  # pyarrow.ArrowInvalid is a ValueError
        raise ValueError(f"{text}: not a storage location pyarrow can open ({_one_line(err)})") from None


def exists(path_or_uri: str) -> bool:
    """Whether a file or folder exists at a plain path or URI."""
    filesystem, path = storage_filesystem(path_or_uri)
    return filesystem.get_file_info(path).type != pafs.FileType.NotFound


# ------------------------------------------------------------------------------------------ shared storage


def require_shared_storage(storage: str, timeout_s: float = 60.0) -> None:
    """Refuse a `--storage` path that some node of the running Ray cluster cannot see (call on the driver).

    A URI (s3://, gs://, ...) and a single-node cluster pass at once. Otherwise a marker file with a random
    token is written under `storage`, one tiny task pinned to each alive node (NodeAffinitySchedulingStrategy,
    no CPU, so busy nodes still run it) reads it back, and the marker is removed. Raises ValueError in one line
    naming the path, the nodes that do not see it and what to use instead.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if is_remote(storage):
        return
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    if len(nodes) <= 1:
        return
    folder = Path(str(storage).removeprefix("file://")).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    marker = folder / f".dsr_shared_check_{token}"
    marker.write_text(token)
    try:
        probe = ray.remote(num_cpus=0, max_retries=0)(_reads_marker)
        pending = {
            probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(
                str(marker), token): node["NodeManagerAddress"]
            for node in nodes
        }
        blind = []
        for ref, address in pending.items():
            try:
                seen = ray.get(ref, timeout=timeout_s)
            except Exception as err:  # a node that cannot even run the check cannot hold the experiment either
                seen = False
                address = f"{address} ({_one_line(err, 80)})"
            if not seen:
                blind.append(address)
    finally:
        marker.unlink(missing_ok=True)
    if blind:
        raise ValueError(f"--storage {storage}: a path on this machine only, not seen by node(s) "
                         f"{', '.join(sorted(blind))} of this {len(nodes)}-node cluster; {SHARED_STORAGE_HELP}")


def _reads_marker(path: str, token: str) -> bool:
    """Runs on one node: does the marker written by the driver exist there with the driver's token?"""
    try:
        return Path(path).read_text() == token
    except OSError:
        return False


# --------------------------------------------------------------------------------------------- datasets


def default_cache_dir() -> Path:
    """Where synced datasets live on a node: $DSR_DATA_CACHE, else ~/.cache/dsr/data."""
    return Path(os.environ.get(DATA_CACHE_ENV) or Path.home() / ".cache" / "dsr" / "data").expanduser()


def local_dataset(data: str, cache_dir: str | os.PathLike[str] | None = None) -> str:
    """A local folder holding the dataset `data`: a plain path is returned as it is; a URI (s3://bucket/mvtec) is
    copied once into `cache_dir` (default `default_cache_dir()`) and that copy's path returned.

    Safe to call from many processes on one node at once: the first copies (into a temporary folder, renamed into
    place, marked complete), the others wait on a file lock and reuse it. Raises FileNotFoundError (one line) when
    nothing is at the URI, ValueError when it holds no file.
    """
    from filelock import FileLock

    if not is_remote(data):
        return str(data).removeprefix("file://") if is_uri(data) else str(data)
    filesystem, source = storage_filesystem(data)
    source = source.rstrip("/")
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    scheme = str(data).split("://", 1)[0].lower()
    target = root / scheme / source
    if (target / SYNCED_MARKER).is_file():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / SYNCED_MARKER).is_file():  # another process finished the copy while we waited
            return str(target)
        info = filesystem.get_file_info(source)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"--data {data}: nothing there (no such bucket, prefix or object)")
        files = [entry for entry in filesystem.get_file_info(pafs.FileSelector(source, recursive=True))
                 if entry.type == pafs.FileType.File]
        if not files:
            raise ValueError(f"--data {data}: holds no files")
        partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        pafs.copy_files(source, str(partial), source_filesystem=filesystem,
                        destination_filesystem=pafs.LocalFileSystem(), use_threads=True)
        copied = sum(1 for path in partial.rglob("*") if path.is_file())
        if copied != len(files):
            shutil.rmtree(partial, ignore_errors=True)
            raise ValueError(f"--data {data}: copied {copied} of {len(files)} files into {partial}; try again")
        (partial / SYNCED_MARKER).write_text(f"{data}\n{len(files)} files\n")
        shutil.rmtree(target, ignore_errors=True)  # an incomplete copy of an earlier, interrupted run
        partial.rename(target)
    return str(target)


def local_file(data: str, cache_dir: str | os.PathLike[str] | None = None) -> str:
    """A local copy of one file: a plain path is returned as it is; a URI (s3://bucket/vq_model.pckl) is copied
    once into `cache_dir` (default `default_cache_dir()`), under a file lock, and that copy's path returned.
    Raises FileNotFoundError (one line) when no file is at the URI."""
    from filelock import FileLock

    if not is_remote(data):
        return str(data).removeprefix("file://") if is_uri(data) else str(data)
    filesystem, source = storage_filesystem(data)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = root / str(data).split("://", 1)[0].lower() / source
    done = target.with_name(target.name + SYNCED_MARKER)
    if done.is_file() and target.is_file():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if done.is_file() and target.is_file():
            return str(target)
        if filesystem.get_file_info(source).type != pafs.FileType.File:
            raise FileNotFoundError(f"{data}: no such file")
        partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
        with filesystem.open_input_stream(source) as stream, open(partial, "wb") as out:
            shutil.copyfileobj(stream, out, length=1 << 22)
        partial.replace(target)
        done.write_text(f"{data}\n")
    return str(target)


def node_demo_root(root: str, kind: str = "demo") -> str:
    """Where this node finds the demo dataset of `kind` ("demo", "demo_hard": `dsr.data.DEMO_KINDS`) that `root`
    names: `root` itself when that kind is built there (the driver's node, or a folder every node mounts), else a
    copy this node builds into its own cache, `<cache>/<kind>` (the build is deterministic: the same images on
    every node), never a path that only exists on the driver's machine."""
    from dsr.data.demo import build_demo_kind, demo_kind

    if demo_kind(root) == kind:
        return str(root)
    local = default_cache_dir() / kind
    build_demo_kind(kind, local)
    return str(local)


def _one_line(text: object, limit: int = 200) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


__all__ = ["is_uri", "is_remote", "storage_filesystem", "exists", "require_shared_storage", "local_dataset",
           "local_file", "node_demo_root", "default_cache_dir", "SHARED_STORAGE_HELP"]
