"""Codebook size K: one stage-1 model per K (trials with equal K share it), then DSR on each category.

    python studies/codebook.py --sizes 64 128 256 512           # small preset default
    python studies/codebook.py --preset paper --sizes 1024 2048 4096 8192 --dataset mvtec --data /data/mvtec
"""

from ray import tune

from studies.runner.harness import main
from studies.runner.study import Study


def add_arguments(parser):
    parser.add_argument("--sizes", nargs="+", type=int, default=None, metavar="K",
                        help="codebook sizes (default: K/4 .. 2K around the preset's K)")


def space(args):
    from dsr.config import preset

    default_k = preset(args.preset).codebook_size
    sizes = args.sizes or [default_k // 4, default_k // 2, default_k, default_k * 2]
    return {"overrides": {"codebook_size": tune.grid_search(sorted(set(sizes)))}}


STUDY = Study(name="codebook", description=__doc__, space=space, add_arguments=add_arguments, default_categories=1)

if __name__ == "__main__":
    main(STUDY)
