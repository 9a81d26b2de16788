"""`python -m dsr COMMAND ...`: the torch core's command line (today: `predict`)."""

import sys

COMMANDS = ("predict",)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m dsr {{{','.join(COMMANDS)}}} ...  (e.g. python -m dsr predict CHECKPOINT IMAGES "
              f"--out DIR)", file=sys.stderr)
        return 2
    from dsr.predict import main as predict

    return predict(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
