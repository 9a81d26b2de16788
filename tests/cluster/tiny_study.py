"""A tiny Ray Tune study used by the multi-node test: each trial reports the node it ran on.

Run as a driver inside a cluster: `python tiny_study.py STORAGE_DIR NUM_TRIALS`; it joins the cluster named by
RAY_ADDRESS and prints one JSON line `{"nodes": [...], "errors": N}` (the node IP of every finished trial).
"""

import json
import os
import sys
import time

import ray
from ray import tune

from studies.runner.runtime import connect


def report_node(config: dict) -> None:
    """Hold one CPU for a moment (so trials overlap and spread) and report where this trial ran."""
    time.sleep(config["hold_s"])
    context = ray.get_runtime_context()
    tune.report({"stage": "done", "node_id": context.get_node_id(), "node_ip": ray.util.get_node_ip_address()})


if __name__ == "__main__":
    storage, num_trials = sys.argv[1], int(sys.argv[2])
    connect(os.environ["RAY_ADDRESS"])
    tuner = tune.Tuner(
        tune.with_resources(report_node, {"cpu": 1}),
        param_space={"trial": tune.grid_search(list(range(num_trials))), "hold_s": 2.0},
        run_config=tune.RunConfig(name="tiny", storage_path=storage, verbose=0),
    )
    results = tuner.fit()
    nodes = [r.metrics.get("node_ip") for r in results if r.metrics.get("stage") == "done"]
    print(json.dumps({"nodes": nodes, "errors": len(results.errors)}))
    ray.shutdown()
