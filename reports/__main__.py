"""python -m reports RESULTS_DIR [--out DIR]: write the report of a (finished or partial) study."""

from __future__ import annotations

import argparse
import sys

from reports.build import build_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports", description=__doc__)
    parser.add_argument("results_dir", help="a Ray Tune experiment folder, or a folder of several; or a URI "
                        "(s3://bucket/experiment)")
    parser.add_argument("--out", default=None, help="output folder (default: RESULTS_DIR/report, for a URI "
                        "written back to URI/report)")
    args = parser.parse_args(argv)
    try:
        report = build_report(args.results_dir, args.out)
    except (FileNotFoundError, ValueError) as error:
        print(f"reports: error: {error}".splitlines()[0], file=sys.stderr)
        return 2
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
