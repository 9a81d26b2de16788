"""cluster/aws.yaml passes Ray's own launcher validation; bad cluster files fail in one line; kuberay.yaml is sound."""

from pathlib import Path

import pytest
import ray
import yaml

from studies.runner.runtime import load_cluster_file

CLUSTER_DIR = Path(__file__).resolve().parents[2] / "cluster"
AWS = CLUSTER_DIR / "aws.yaml"


def test_aws_yaml_passes_ray_validation() -> None:
    config = load_cluster_file(AWS)
    head = config["available_node_types"][config["head_node_type"]]
    workers = {name: t for name, t in config["available_node_types"].items() if name != config["head_node_type"]}
    assert "InstanceMarketOptions" not in head["node_config"]  # on-demand head
    assert head["resources"].get("GPU", 0) == 0
    assert workers and all(t["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot" for t in workers.values())
    assert all(t["resources"]["GPU"] >= 1 for t in workers.values())
    assert config["auth"]["ssh_user"] == "ubuntu"
    # S3 storage and data from the workers: they launch with an instance profile
    assert all(t["node_config"]["IamInstanceProfile"] for t in workers.values())


def test_aws_yaml_ships_the_project_only_with_the_job() -> None:
    """One way to ship: nodes get the dependency list and the token, never the code (the job's working_dir)."""
    config = load_cluster_file(AWS)
    assert set(config["file_mounts"].values()) == {"pyproject.toml", "~/.ray/auth_token"}
    setup = "\n".join(config["setup_commands"])
    assert "pip install" in setup and "-e " not in setup and "dsr-studies" not in setup
    assert "/home/ubuntu/dsr-deps/pyproject.toml" in setup and "requirements.txt" in setup
    assert {"/.venv", "/.git", "/data", "/results"} <= set(config["rsync_exclude"])  # anchored


def test_aws_yaml_nodes_have_the_python_torch_and_ray_the_project_pins() -> None:
    import re
    import tomllib

    from packaging.specifiers import SpecifierSet

    config = load_cluster_file(AWS)
    setup = "\n".join(config["setup_commands"])
    requires = SpecifierSet(tomllib.loads((CLUSTER_DIR.parent / "pyproject.toml").read_text())["project"]
                            ["requires-python"])
    pythons = set(re.findall(r"python(3\.\d+)", setup))
    assert pythons and all(version in requires for version in pythons), (pythons, requires)
    makefile = (CLUSTER_DIR.parent / "Makefile").read_text()
    for package in ("torch", "torchvision"):
        pinned = re.search(rf'"{package}==([^"]+)"', makefile).group(1)
        assert f'"{package}=={pinned}"' in setup  # the nodes run the torch the Makefile pins
    assert f"ray[default,tune]=={ray.__version__}" in setup  # nodes run the Ray this client runs
    assert "~/.ray/auth_token" in config["file_mounts"].values()
    for start in (config["head_start_ray_commands"][-1], config["worker_start_ray_commands"][-1]):
        assert "RAY_AUTH_MODE=token ray start" in start
    assert "--dashboard-host=127.0.0.1" in config["head_start_ray_commands"][-1]


def test_missing_cluster_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_cluster_file(tmp_path / "nope.yaml")


def test_broken_yaml_is_one_line_error_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("cluster_name: x\nprovider: {type: aws\n  region: [us-east-1\n")
    with pytest.raises(ValueError) as info:
        load_cluster_file(bad)
    message = str(info.value)
    assert "\n" not in message and str(bad) in message and "not valid YAML" in message and "line" in message


@pytest.mark.parametrize(
    "change, field",
    [
        ({"max_workers": "many"}, "max_workers"),
        ({"no_such_field": 1}, "no_such_field"),
        ({"head_node_type": "missing_type"}, "head_node_type"),
    ],
)
def test_invalid_config_is_one_line_error_naming_the_field(tmp_path: Path, change: dict, field: str) -> None:
    config = yaml.safe_load(AWS.read_text())
    config.update(change)
    bad = tmp_path / "invalid.yaml"
    bad.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError) as info:
        load_cluster_file(bad)
    message = str(info.value)
    assert "\n" not in message and str(bad) in message and "validation" in message and field in message


def test_not_a_mapping(tmp_path: Path) -> None:
    bad = tmp_path / "list.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        load_cluster_file(bad)


def test_kuberay_manifest_is_a_rayjob_with_token_auth_and_gpu_workers() -> None:
    manifest = yaml.safe_load((CLUSTER_DIR / "kuberay.yaml").read_text())
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayJob"
    spec = manifest["spec"]
    assert spec["entrypoint"].startswith("python studies/")
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["working_dir"]
    import re as _re

    makefile = (CLUSTER_DIR.parent / "Makefile").read_text()
    for package in ("torch", "torchvision"):  # the pods run the torch the Makefile pins
        pinned = _re.search(rf'"{package}==([^"]+)"', makefile).group(1)
        assert f"{package}=={pinned}" in runtime_env["pip"]
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__
    assert cluster["authOptions"]["mode"] == "token"
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"].startswith(f"rayproject/ray:{ray.__version__}")
    worker = cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] >= 1
    assert worker["image"].startswith(f"rayproject/ray:{ray.__version__}") and worker["image"].endswith("-gpu")
    import re
    import tomllib

    from packaging.specifiers import SpecifierSet

    requires = SpecifierSet(tomllib.loads((CLUSTER_DIR.parent / "pyproject.toml").read_text())["project"]
                            ["requires-python"])
    for image in (head["image"], worker["image"]):  # the images' Python satisfies requires-python
        tag = re.search(r"-py3(\d+)", image).group(1)
        assert f"3.{tag}" in requires, image


def test_kuberay_entrypoint_joins_its_own_cluster_by_the_harness_parser() -> None:
    """The RayJob's study must join the KubeRay cluster (--address auto), not start a single-node Ray in the head
    pod whose GPU trials would stay pending; parsed with the harness's own parser."""
    import shlex

    from studies.ablation import STUDY
    from studies.runner.harness import build_parser

    entrypoint = yaml.safe_load((CLUSTER_DIR / "kuberay.yaml").read_text())["spec"]["entrypoint"]
    words = shlex.split(entrypoint.replace("<STUDY>", "ablation").replace("<BUCKET>", "bucket"))
    assert words[:2] == ["python", "studies/ablation.py"]
    args = build_parser(STUDY).parse_args(words[2:])
    assert args.address == "auto" and args.cluster is None and args.storage.startswith("s3://")


def test_ray_jobs_upload_ships_every_module(tmp_path: Path) -> None:
    """What Ray's own packaging uploads with our excludes: every dsr/data module, nothing of /data or /results."""
    import zipfile

    from ray._private.runtime_env.packaging import _zip_files

    from studies.runner.runtime import PROJECT_DIR, UPLOAD_EXCLUDES

    out = tmp_path / "package.zip"
    _zip_files(str(PROJECT_DIR), list(UPLOAD_EXCLUDES), str(out), include_gitignore=True)
    shipped = set(zipfile.ZipFile(out).namelist())
    modules = {p.relative_to(PROJECT_DIR).as_posix() for p in (PROJECT_DIR / "dsr").rglob("*.py")}
    assert modules and modules <= shipped, sorted(modules - shipped)[:5]
    assert not [n for n in shipped if n.startswith(("data/", "results/", ".venv/", ".git/"))]
