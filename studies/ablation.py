"""Table 6: the paper's ablation variants (DSR, DSR_img, DSR_random, DSR_Limg, DSR_Lfeat, DSR_U-) x categories x seeds.

    python studies/ablation.py                          # embedded Ray, demo data, small preset
    python studies/ablation.py --dataset mvtec --data /data/mvtec --preset paper --seeds 3 --cluster cluster/aws.yaml
"""

from ray import tune

from dsr.variants import VARIANTS
from studies.runner.harness import main
from studies.runner.study import Study


def add_arguments(parser):
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), metavar="V",
                        help=f"variants to run (default all: {', '.join(VARIANTS)})")


STUDY = Study(
    name="ablation",
    description=__doc__,
    space=lambda args: {"variant": tune.grid_search(list(args.variants))},
    add_arguments=add_arguments,
    default_categories=1,
)

if __name__ == "__main__":
    main(STUDY)
