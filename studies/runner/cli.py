"""A study's command line: the options every study takes (plus its own), and the checks of their values alone."""

from __future__ import annotations

import argparse
from pathlib import Path

from dsr.config import PRESETS
from dsr.data.build import DATASET_KINDS
from studies.runner.objective import add_metric_argument, check_metrics
from studies.runner.study import Study, StudyError
from studies.runner.tracking import add_tracker_arguments, check_tracker

DEFAULT_STORAGE = Path(__file__).resolve().parents[2] / "results"


def build_parser(study: Study) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"studies/{study.name}.py", description=study.description)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--cluster", metavar="FILE", help="Ray cluster launcher file: bring it up (or reuse it), "
                       "run the study there through Ray Jobs, bring the results back")
    where.add_argument("--address", metavar="ADDR", help="an existing Ray cluster (host:port or ray://...)")
    parser.add_argument("--dry-run", action="store_true", help="with --cluster: check everything, print the "
                        "commands and every file of the package that would be uploaded; start nothing")
    parser.add_argument("--down", action="store_true", help="with --cluster: tear the cluster down once the study "
                        "has ended (never while it runs)")
    parser.add_argument("--attach", metavar="JOB_ID", help="with --cluster: follow a study submitted earlier (the "
                        "job id it printed) to its end, e.g. from a new terminal; with --down, tear down after")
    parser.add_argument("--placement-timeout", type=float, default=15.0, metavar="MIN", help="stop the study when "
                        "a trial asks for a resource no node has for this many minutes (0: wait for ever)")
    parser.add_argument("--preset", default="small", help=f"DSR preset: {', '.join(PRESETS)} (default small)")
    parser.add_argument("--dataset", default="demo", choices=DATASET_KINDS)
    parser.add_argument("--data", metavar="PATH", help="dataset root (default for demo, demo_hard: data/<kind>, "
                        "built on use)")
    parser.add_argument("--categories", nargs="+", metavar="C", help="categories (default: the study's choice; "
                        "`all`: every category of the dataset, e.g. the 15 of MVTec AD for the paper's tables)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per configuration (0..N-1)")
    parser.add_argument("--storage", default=str(DEFAULT_STORAGE), help="results: a path or a URI (s3://...)")
    parser.add_argument("--name", default=None, help="experiment name (a folder under --storage)")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0)
    parser.add_argument("--gpus-per-trial", type=float, default=0.0, help="fractions allowed, e.g. 0.5")
    parser.add_argument("--stage1-cpus", type=float, default=0.0, help="CPUs for each model of the stage-1 "
                        "phase (0: on CPUs, the cluster's CPUs shared among the phase's models, so a study with "
                        "one stage 1 uses the whole machine; at least --cpus-per-trial). On a machine busy with "
                        "other work give 1: threads that wait for each other lose more than one thread does when "
                        "the cores are taken")
    parser.add_argument("--max-concurrent", type=int, default=0, help="trials at once (0: as resources allow)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted experiment of this name")
    parser.add_argument("--max-failures", type=int, default=3, help="retries of a failed trial (from checkpoint)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="a DSRConfig field for every trial, e.g. --set stage2_iterations=200")
    parser.add_argument("--stage1-data", metavar="DIR", help="images for stage 1 (default: the categories' "
                        "train images)")
    parser.add_argument("--stage1-checkpoint", metavar="FILE", help="a stage-1 model instead of training stage 1: "
                        "the reference's vq_model_pretrained_128_4096.pckl (ImageNet; trained on BGR images: add "
                        "--set channel_order=bgr) or a latent.pt / model checkpoint of this project")
    parser.add_argument("--report-every", type=int, default=0, help="iterations between progress reports "
                        "(0: about 20 per stage)")
    parser.add_argument("--checkpoint-every", type=int, default=0, help="iterations between checkpoints "
                        "(0: about 5 per stage)")
    parser.add_argument("--checkpoint-minutes", type=float, default=0.0, help="also checkpoint once this many "
                        "minutes of training passed since the last checkpoint (0: off); on spot nodes a "
                        "reclaimed trial then loses at most that much work")
    parser.add_argument("--no-report", action="store_true", help="skip building the report at the end")
    parser.add_argument("--search-fraction", type=float, default=0.5, help="searched studies: the part of each "
                        "test set the searcher sees; the rest is only reported (default 0.5)")
    add_tracker_arguments(parser)
    if study.searcher is not None:
        add_metric_argument(parser)
        parser.add_argument("--repeats", type=int, default=1, metavar="N", help="searched studies: judge each "
                            "sampled configuration on seeds 0..N-1 of every --categories value; the searcher "
                            "optimises the mean, the report gives mean and 95%% interval (default 1)")
    if study.add_arguments is not None:
        study.add_arguments(parser)
    return parser


def check_options(args: argparse.Namespace) -> None:
    """Option values the parser cannot check alone: a known preset, fractions and intervals in range."""
    from dsr.config import preset

    try:
        preset(args.preset)
    except ValueError as error:
        raise StudyError(str(error).splitlines()[0]) from None
    if not 0.0 < args.search_fraction < 1.0:
        raise StudyError(f"--search-fraction must lie in (0, 1), got {args.search_fraction}")
    if args.attach and not args.cluster:
        raise StudyError("--attach follows a study on a --cluster FILE: give the cluster file too")
    for option in ("report_every", "checkpoint_every", "checkpoint_minutes", "stage1_cpus"):
        if getattr(args, option) < 0:
            raise StudyError(f"--{option.replace('_', '-')} must be >= 0, got {getattr(args, option)}")
    if getattr(args, "repeats", 1) < 1:
        raise StudyError(f"--repeats must be >= 1, got {args.repeats}")
    if hasattr(args, "metric"):
        check_metrics(args.metric)
    check_tracker(args)


__all__ = ["DEFAULT_STORAGE", "build_parser", "check_options"]
