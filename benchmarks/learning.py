"""Does the detector learn? Stage 2 (and optionally 3) of one demo category on a cached stage-1 model: the focal
loss curve and image AUROC / pixel AP per defect type, as one JSON line (docs/learning.md).

    python benchmarks/learning.py --category brick --latent /tmp/latent_small.pt --set both_levels_probability=1.0
    python benchmarks/learning.py --dataset demo_hard --category gravel --latent /tmp/latent_small.pt

--dataset demo_hard reads the hard demo (data/demo_hard): its train images and stage-1 photographs are the easy
demo's, byte for byte, so one cached stage-1 model serves both.

The stage-1 model is trained once as a study does for the demo (every category's train images plus the demo's
stage-1 photographs) and saved to --latent when that file does not exist yet; later runs reuse it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dsr import DSR, preset  # noqa: E402
from dsr.data import build_dataset, load_all  # noqa: E402
from dsr.data import DEMO_KINDS  # noqa: E402
from dsr.data.demo import DEMO_CATEGORIES, build_demo_kind, demo_kind, demo_stage1_folder  # noqa: E402
from dsr.evaluation.evaluate import defect_metrics, metrics_from_predictions, predict_all  # noqa: E402
from dsr.training import TrainingData  # noqa: E402
from dsr.training.loop import run_stage  # noqa: E402


def stage1_latent(config, root: Path, path: Path) -> dict:
    """The cached stage-1 state at `path`, trained (and saved) first if missing."""
    if path.is_file():
        return torch.load(path, weights_only=True)
    from dsr.data import AnomalyDataset, Sample

    kind = demo_kind(root)
    images = [load_all(build_dataset(kind, root, c, "train", config.image_size), progress=False).images
              for c in DEMO_CATEGORIES]
    photos = sorted(demo_stage1_folder(root).glob("*.png"))
    images.append(load_all(AnomalyDataset([Sample(p, 0, None, "stage1", "good") for p in photos],
                                          image_size=config.image_size), progress=False).images)
    torch.manual_seed(config.seed)
    model = DSR(config)
    run_stage("stage1", model, TrainingData(torch.cat(images)), progress=False)
    torch.save(model.latent.state_dict(), path)
    return model.latent.state_dict()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="demo", choices=tuple(DEMO_KINDS), help="which demo (default demo)")
    parser.add_argument("--root", type=Path, help="where it is built (default data/<dataset>)")
    parser.add_argument("--category", default="brick", choices=DEMO_CATEGORIES)
    parser.add_argument("--latent", type=Path, required=True, help="stage-1 state (trained and saved if missing)")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=JSON")
    parser.add_argument("--stage3", action="store_true", help="also train the upsampling module")
    parser.add_argument("--every", type=int, default=50, help="focal loss mean over this many iterations")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--filters", type=int, nargs="*", default=[],
                        help="also give per-defect image AUROC with these score filter sizes (same predictions)")
    parser.add_argument("--save", type=Path, help="save the trained model's state here")
    args = parser.parse_args(argv)
    if args.filters and args.stage3:
        parser.error("--filters re-scores the detection module's maps: it cannot be used with --stage3")
    torch.set_num_threads(args.threads)
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    config = preset(args.preset, **overrides)
    if not args.stage3:
        config = config.replace(use_upsampling=False)  # image scores come from the detection module alone
    root = build_demo_kind(args.dataset, args.root or ROOT / "data" / args.dataset)
    latent = stage1_latent(config, root, args.latent)
    train = load_all(build_dataset(args.dataset, root, args.category, "train", config.image_size), progress=False)
    test = build_dataset(args.dataset, root, args.category, "test", config.image_size)
    torch.manual_seed(config.seed)
    model = DSR(config)
    model.latent.load_state_dict(latent)
    curve: list[tuple[int, float]] = []
    start = time.time()

    def on_event(event) -> None:
        if event.stage == "stage2":
            curve.append((event.iteration, round(event.losses["loss_focal"], 4)))

    data = TrainingData(train.images)
    run_stage("stage2", model, data, callback=on_event, report_every=args.every, progress=False)
    if args.stage3:
        run_stage("stage3", model, data, progress=False)
    seconds = time.time() - start
    scores, maps, labels, masks = predict_all(model, test)
    types = [s.defect_type for s in test.samples]
    metrics = metrics_from_predictions(scores, maps, labels, masks)
    normal = np.array(types) == "good"
    result = {"dataset": args.dataset, "category": args.category, "set": overrides, "seed": config.seed,
              "train_seconds": round(seconds),
              "focal": curve, "image_auroc": round(100 * metrics["image_auroc"], 1),
              "normal_scores": [round(float(scores[normal].min()), 3), round(float(scores[normal].max()), 3)],
              "per_defect": {d: {k: round(100 * v, 1) for k, v in m.items()}
                             for d, m in defect_metrics(scores, maps, labels, masks, types).items()}}
    for size in args.filters:  # the image score from the same detection maps with another mean-filter size
        filtered = torch.nn.functional.avg_pool2d(torch.from_numpy(maps)[:, None], size, stride=1,
                                                  padding=size // 2).amax(dim=(1, 2, 3)).numpy()
        result[f"per_defect_filter{size}"] = {
            d: round(100 * m["image_auroc"], 1)
            for d, m in defect_metrics(filtered, maps, labels, masks, types).items()}
    if args.save:
        torch.save(model.state_dict(), args.save)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
