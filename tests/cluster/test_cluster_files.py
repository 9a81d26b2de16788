"""The cluster files work, checked by what decides it rather than by restating their literals: Ray's own validator,
the study's own parser for the command each file runs, the GPU trials fit the node types, the nodes run the torch and
Ray this project pins, and the IAM set-up gives the head the right to pass the workers' role that aws.yaml names
(the set-up run against a stand-in `aws` CLI that records it)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import ray
import yaml
from packaging.specifiers import SpecifierSet

from studies.ablation import STUDY
from studies.runner.harness import build_parser
from studies.runner.placement import missing_resources
from studies.runner.runtime import load_cluster_file

CLUSTER_DIR = Path(__file__).resolve().parents[2] / "cluster"
PROJECT = CLUSTER_DIR.parent
AWS = CLUSTER_DIR / "aws.yaml"
KUBERAY = CLUSTER_DIR / "kuberay.yaml"


def _pinned(package: str) -> str:
    """The version the Makefile pins `package` to."""
    return re.search(rf'"{package}==([^"]+)"', (PROJECT / "Makefile").read_text()).group(1)


def _requires_python() -> SpecifierSet:
    return SpecifierSet(tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["requires-python"])


# ------------------------------------------------------------------------------------------------- aws.yaml


def test_aws_yaml_passes_ray_validation_and_a_gpu_trial_fits_a_worker_not_the_head() -> None:
    config = load_cluster_file(AWS)
    types = config["available_node_types"]
    head = config["head_node_type"]
    trial = {"CPU": 1.0, "GPU": 1.0}  # a trial of `--gpus-per-trial 1`
    assert missing_resources(trial, [types[head]["resources"]])  # the head keeps the driver, not trials
    fitting = [name for name, kind in types.items() if name != head and not missing_resources(trial, [kind["resources"]])]
    assert fitting and all(types[name]["max_workers"] > 0 for name in fitting)  # the autoscaler may add them


def test_aws_yaml_nodes_have_the_python_torch_and_ray_the_project_pins() -> None:
    config = load_cluster_file(AWS)
    setup = "\n".join(config["setup_commands"])
    pythons = set(re.findall(r"python(3\.\d+)", setup))
    assert pythons and all(version in _requires_python() for version in pythons), pythons
    for package in ("torch", "torchvision"):
        assert f'"{package}=={_pinned(package)}"' in setup
    assert f"ray[default,tune]=={ray.__version__}" in setup  # nodes run the Ray this client runs
    assert "-e " not in setup and "pip install ." not in setup  # the project itself comes with each job
    for remote, local in config["file_mounts"].items():  # what the nodes get: files of this project, the token
        assert local == "~/.ray/auth_token" or (PROJECT / local).is_file(), (remote, local)


def _fake_aws(folder: Path) -> Path:
    """An `aws` CLI stand-in: records each call (arguments, and policy documents read) as a JSON line; IAM
    objects do not exist until created; the account is 123456789012."""
    log = folder / "aws-calls.jsonl"
    script = folder / "aws"
    script.write_text(f"""#!{sys.executable}
import json, sys
args = sys.argv[1:]
with open({str(log)!r}, "a") as out:
    out.write(json.dumps(args) + "\\n")
if args[:2] == ["sts", "get-caller-identity"]:
    print("123456789012")
elif args[1:2] in (["get-role"], ["get-instance-profile"]):
    sys.exit(0 if "--query" in args else 254)  # nothing exists yet; the role list is empty
""")
    script.chmod(0o755)
    return log


def test_iam_setup_lets_the_head_pass_exactly_the_role_of_the_workers_profile(tmp_path: Path) -> None:
    """Without iam:PassRole on the workers' role, EC2 refuses RunInstances and the GPU workers never start."""
    log = _fake_aws(tmp_path)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.run(["bash", str(CLUSTER_DIR / "iam" / "setup.sh"), "my-bucket"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]

    def option(call: list[str], name: str) -> str:
        return call[call.index(name) + 1]

    profiles = {option(c, "--instance-profile-name"): option(c, "--role-name") for c in calls
                if c[:2] == ["iam", "add-role-to-instance-profile"]}
    policies: dict[str, list[dict]] = {}
    for call in calls:
        if call[:2] == ["iam", "put-role-policy"]:
            policies.setdefault(option(call, "--role-name"), []).extend(
                json.loads(option(call, "--policy-document"))["Statement"])
    managed = {option(c, "--role-name"): option(c, "--policy-arn") for c in calls
               if c[:2] == ["iam", "attach-role-policy"]}

    config = load_cluster_file(AWS)
    types, head = config["available_node_types"], config["head_node_type"]
    head_profile = types[head]["node_config"]["IamInstanceProfile"]["Name"]
    worker_profiles = {kind["node_config"]["IamInstanceProfile"]["Name"] for name, kind in types.items()
                       if name != head}
    assert head_profile in profiles and worker_profiles <= set(profiles)  # the profiles aws.yaml names exist
    head_role = profiles[head_profile]

    def allows(role: str, action: str, resource: str) -> bool:
        return any(s["Effect"] == "Allow" and action in ([s["Action"]] if isinstance(s["Action"], str) else
                   s["Action"]) and resource in ([s["Resource"]] if isinstance(s["Resource"], str) else
                   s["Resource"]) for s in policies.get(role, []))

    for worker_profile in worker_profiles:
        worker_role = profiles[worker_profile]
        assert allows(head_role, "iam:PassRole", f"arn:aws:iam::123456789012:role/{worker_role}")
        assert allows(worker_role, "s3:PutObject", "arn:aws:s3:::my-bucket/*")
        assert allows(worker_role, "s3:ListBucket", "arn:aws:s3:::my-bucket")
        assert not any("iam:" in json.dumps(s["Action"]) for s in policies[worker_role])  # bucket only
    assert allows(head_role, "s3:GetObject", "arn:aws:s3:::my-bucket/*")
    assert managed.get(head_role, "").endswith("AmazonEC2FullAccess")  # launches and ends the workers
    if any(str(kind["node_config"]["ImageId"]).startswith("resolve:ssm:") for kind in types.values()):
        assert any("ssm:GetParameters" in json.dumps(s["Action"]) for s in policies[head_role])


# ---------------------------------------------------------------------------------------------- bad files


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


# --------------------------------------------------------------------------------------------- kuberay.yaml


def test_kuberay_manifest_is_a_rayjob_with_token_auth_spot_gpu_workers_and_an_on_demand_head() -> None:
    manifest = yaml.safe_load(KUBERAY.read_text())
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayJob"
    spec = manifest["spec"]
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["working_dir"] and "pip" not in runtime_env  # nothing installed at each job start
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__
    assert cluster["authOptions"]["mode"] == "token"
    head = cluster["headGroupSpec"]["template"]["spec"]
    worker = cluster["workerGroupSpecs"][0]["template"]["spec"]
    assert head["nodeSelector"]["eks.amazonaws.com/capacityType"] == "ON_DEMAND"
    assert worker["nodeSelector"]["eks.amazonaws.com/capacityType"] == "SPOT"
    assert worker["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] >= 1
    assert head["containers"][0]["image"] == worker["containers"][0]["image"]  # the image cluster/Dockerfile builds


def test_the_kuberay_image_holds_the_pinned_torch_and_this_ray() -> None:
    dockerfile = (CLUSTER_DIR / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", dockerfile, re.M).group(1)
    assert base.startswith(f"rayproject/ray:{ray.__version__}-py3") and base.endswith("-gpu")
    minor = re.search(r"-py3(\d+)", base).group(1)
    assert f"3.{minor}" in _requires_python()
    for package in ("torch", "torchvision"):
        assert f'"{package}=={_pinned(package)}"' in dockerfile
    assert f"ray[default,tune]=={ray.__version__}" in dockerfile


def test_kuberay_entrypoint_is_the_papers_table_6_by_the_studys_own_parser() -> None:
    """It must join the KubeRay cluster (--address auto, not a single-node Ray in the head pod whose GPU trials
    would stay pending), put every trial on a GPU and read MVTec AD from S3."""
    entrypoint = yaml.safe_load(KUBERAY.read_text())["spec"]["entrypoint"]
    words = shlex.split(entrypoint.replace("<BUCKET>", "bucket"))
    assert words[:2] == ["python", "studies/ablation.py"]
    args = build_parser(STUDY).parse_args(words[2:])
    assert args.address == "auto" and args.cluster is None and args.storage.startswith("s3://")
    assert args.gpus_per_trial >= 1 and args.dataset == "mvtec" and args.data.startswith("s3://")
    assert args.preset == "paper" and args.categories == ["all"] and args.seeds == 3  # Table 6: all of MVTec AD


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


# ---------------------------------------------------------------------------------------------- onprem.yaml


def test_onprem_yaml_passes_ray_validation_and_launches_like_aws(tmp_path: Path) -> None:
    """Ray's `local` provider, hosts filled in: Ray's validator accepts it, the nodes run the pinned torch and Ray,
    and `--cluster` prepares it with each setup command once and no AWS prerequisite."""
    import copy

    from ray.autoscaler._private.util import prepare_config

    import studies.runner.launch as launch

    onprem = tmp_path / "onprem.yaml"
    onprem.write_text((CLUSTER_DIR / "onprem.yaml").read_text().replace("<HEAD_HOST>", "10.0.0.1")
                      .replace("<WORKER_HOST_1>", "10.0.0.2").replace("<WORKER_HOST_2>", "10.0.0.3")
                      .replace("<SSH_USER>", "dsr"))
    config = load_cluster_file(onprem)
    assert config["provider"]["type"] == "local" and config["provider"]["worker_ips"] == ["10.0.0.2", "10.0.0.3"]
    setup = "\n".join(config["setup_commands"])
    for package in ("torch", "torchvision"):
        assert f'"{package}=={_pinned(package)}"' in setup
    assert f"ray[default,tune]=={ray.__version__}" in setup
    argv = ["--cluster", str(onprem), "--storage", "s3://bucket/dsr"]
    run = launch.prepare_cluster_run(STUDY.name, build_parser(STUDY).parse_args(argv), argv)
    head = prepare_config(copy.deepcopy(run.config))["head_setup_commands"]
    assert all(head.count(command) == 1 for command in config["setup_commands"])
    assert launch.iam_prerequisite(run.config) is None
