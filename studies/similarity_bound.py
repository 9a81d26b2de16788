"""Table 5: the similarity bound lambda_s of the feature-space anomaly sampling, lambda_s in {0.01 ... 0.5}.

    python studies/similarity_bound.py --dataset mvtec --data /data/mvtec --preset paper --seeds 3
"""

from ray import tune

from studies.runner.harness import main
from studies.runner.study import Study

TABLE5_LAMBDAS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5]


def add_arguments(parser):
    parser.add_argument("--lambdas", nargs="+", type=float, default=TABLE5_LAMBDAS, metavar="L",
                        help="similarity bounds (default: Table 5's)")


STUDY = Study(
    name="similarity_bound",
    description=__doc__,
    space=lambda args: {"overrides": {"similarity_bound": tune.grid_search(list(args.lambdas))}},
    add_arguments=add_arguments,
    default_categories=1,
)

if __name__ == "__main__":
    main(STUDY)
