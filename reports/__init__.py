"""reports: turn the results of any DSR study (finished or partial) into the paper's tables and figures.

load (reports.load) -> aggregate (reports.tables) -> render (reports.render, reports.figures);
`build_report` runs all three, `python -m reports RESULTS_DIR [--out DIR]` is the command line.
"""

from reports.build import build_report
from reports.load import find_experiments, load_experiment
from reports.tables import StudyTable, build_tables

__all__ = ["build_report", "load_experiment", "find_experiments", "build_tables", "StudyTable"]
