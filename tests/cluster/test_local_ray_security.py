"""The embedded local Ray listens on loopback only, never on all interfaces, and so does its dashboard."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from studies.runner.runtime import _is_loopback

REPO_ROOT = Path(__file__).resolve().parents[2]

# Ray is imported before init_local_ray runs, as in the harness: the loopback switch must still take effect.
DRIVER = """
import json, sys, time
import ray
sys.path.insert(0, sys.argv[1])
from studies.runner.runtime import init_local_ray, local_listeners

init_local_ray(num_cpus=1, include_dashboard=True)
assert ray.get(ray.remote(lambda: 1).remote()) == 1  # a worker process exists too
time.sleep(1.0)  # agents finish binding
context = ray.get_runtime_context()
listeners = local_listeners()
print(json.dumps({"listeners": listeners, "gcs": context.gcs_address,
                  "dashboard": ray.worker.get_dashboard_url()}))
ray.shutdown()
"""


@pytest.mark.parametrize("ip, expected", [
    ("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("0.0.0.0", False), ("::", False), ("192.0.2.2", False), ("::ffff:10.0.0.1", False), ("fd00::2", False),
])
def test_loopback_classification(ip: str, expected: bool) -> None:
    assert _is_loopback(ip) is expected


@pytest.mark.slow  # starts an embedded Ray in a subprocess: half a minute on a shared 2-core machine
def test_embedded_ray_listens_on_loopback_only() -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")}  # init_local_ray must do it alone
    run = subprocess.run([sys.executable, "-c", DRIVER, str(REPO_ROOT)], env=env, capture_output=True, text=True, check=False,
                         timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    listeners = report["listeners"]
    names = {name for _, name, _, _ in listeners}
    assert {"gcs_server", "raylet"} <= names, names  # the servers were seen, so the check below means something
    exposed = [entry for entry in listeners if not _is_loopback(entry[2])]
    assert not exposed, exposed
    assert report["gcs"].startswith("127.0.0.1:")
    dashboard_host, dashboard_port = report["dashboard"].rsplit(":", 1)
    assert dashboard_host.endswith("127.0.0.1")
    assert any(port == int(dashboard_port) and ip == "127.0.0.1" for _, _, ip, port in listeners)
