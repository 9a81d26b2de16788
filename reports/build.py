"""build_report: load -> aggregate -> render for a whole results folder, with report.md linking everything."""

from __future__ import annotations

import datetime as _dt
import logging
import os
from pathlib import Path

import seaborn as sns

from reports import figures
from reports.defects import DEFECT_NOTE, defect_display, write_defects
from reports.load import load_experiment
from reports.render import PAPER_NOTE, summary_display, table_title, to_markdown, write_study
from reports.spec import CONDITION_NAMES, METRIC_NAMES, MISSING
from reports.tables import StudyTable, build_tables, category_matrix, malformed_count

log = logging.getLogger(__name__)
DEFAULT_OUT = "report"  # build_report(results_dir) writes to results_dir/report


def build_report(results_dir: str | Path, out_dir: str | Path | None = None) -> Path | str:
    """Write the report of the experiment(s) in results_dir (a folder or a URI such as s3://bucket/exp).

    A URI is read through pyarrow (results and evaluation records, not the models); its report goes to out_dir
    if given, else back beside the experiment (URI/report). Returns the path (or URI) of report.md.
    """
    from dsr.locations import is_remote
    from reports.remote import fetch_experiment, upload_folder

    if is_remote(results_dir):
        import tempfile

        uri = str(results_dir).rstrip("/")
        with tempfile.TemporaryDirectory(prefix="dsr-report-") as scratch:
            local = fetch_experiment(uri, Path(scratch) / uri.rsplit("/", 1)[-1])
            if out_dir is not None:
                return build_local_report(local, out_dir)
            report = build_local_report(local, Path(scratch) / DEFAULT_OUT)
            upload_folder(report.parent, f"{uri}/{DEFAULT_OUT}")
            return f"{uri}/{DEFAULT_OUT}/{report.name}"
    return build_local_report(results_dir, out_dir)


def build_local_report(results_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write every table and figure of the experiment(s) in results_dir to out_dir; returns out_dir/report.md.

    results_dir: one Tune experiment folder or a folder holding several (finished, running or failed).
    out_dir: defaults to results_dir/report. Writes report.md, trials.csv, tables/*.{md,tex,csv} and
    figures/*.{png,pdf}. Raises FileNotFoundError / ValueError (one line) if results_dir holds no
    dsr-studies experiment.
    """
    results_dir = Path(results_dir)
    out = Path(out_dir) if out_dir is not None else results_dir / DEFAULT_OUT
    trials = load_experiment(results_dir)
    tables = build_tables(trials)
    if not tables:
        raise ValueError(f"no trial in {results_dir} has both a category and a seed in its config: nothing to tabulate")
    out.mkdir(parents=True, exist_ok=True)
    trials.to_csv(out / "trials.csv", index=False, na_rep="")

    notes = list(trials.attrs.get("notes", []))
    if malformed_count(trials):
        notes.append(f"{malformed_count(trials)} trial(s) without a category or seed in their config were left out.")
    sections = []
    for table in tables:
        files = write_study(table, out / "tables")
        breakdown, defect_files = write_defects(table, out / "tables")
        if table.duplicates_dropped:
            notes.append(f"{table.name}: {table.duplicates_dropped} duplicate trial(s) of the same cell; the latest "
                         "finished one is used.")
        if table.unplaced:
            notes.append(f"{table.name}: {table.unplaced} trial(s) left out: their {table.spec.condition} is unknown "
                         "(no override and no preset default).")
        figure_paths, figure_notes = _draw_figures(table, out / "figures")
        notes += figure_notes
        gallery = _draw_gallery(table, out / "figures")
        if gallery is not None:
            figure_paths["gallery"] = gallery
        sections.append(_section(table, files, figure_paths, out, breakdown, defect_files))
        search_section, search_notes = _search_section(trials, table, out)
        sections += [search_section] if search_section else []
        notes += search_notes

    from reports.cost import cost_section
    from reports.provenance import provenance_lines, read_provenance

    experiment_dirs = trials.attrs.get("experiment_dirs", {})
    provenance = {name: read_provenance(folder) for name, folder in experiment_dirs.items()}
    try:
        sections.append(cost_section(trials, experiment_dirs, provenance, out / "tables",
                                     lambda path: os.path.relpath(path, out).replace(os.sep, "/")))
    except Exception as error:  # the cost section must not cost the tables; say what failed
        log.warning("cost section failed: %s", error)
        notes.append(f"the cost section could not be written ({type(error).__name__}: {error}).")

    expected = sum(t.missing.expected for t in tables)
    done = sum(t.missing.done for t in tables)
    stopped = sum(t.missing.stopped for t in tables)
    missing = expected - done - stopped
    head = [
        "# DSR studies report",
        "",
        f"Source: `{results_dir}` ({len(trials.attrs.get('experiments', []))} experiment(s): "
        f"{', '.join(trials.attrs.get('experiments', []))}). Generated {_dt.datetime.now():%Y-%m-%d %H:%M}.",
        "",
        _headline(expected, done, stopped, missing, sum(t.duplicates_dropped for t in tables)),
        "",
        "Values are percent. A table cell is the mean over categories, averaged over the seeds whose every "
        "category finished; ± is the sample standard deviation (ddof=1) over those seeds, \"(n/m seeds)\" says "
        f"how many seeds were complete, and {MISSING} marks a cell without a result (\"missing\" in the figures; "
        "never 0). Per-category cells "
        f"are mean ± std over seeds. Δ = ours − paper, in points; {PAPER_NOTE}. In the CSV files the numbers are "
        "unrounded and a missing value is an empty field. trials.csv lists every trial and its status.",
        "",
        "95% CI: a bootstrap interval (scipy.stats.bootstrap, percentile) resampling each category's test images "
        "(normal and anomalous separately) and, with several seeds, the seeds; pixel AP resamples a stored "
        "subsample of each image's pixels. \"vs X\": the paired bootstrap of the difference to the baseline X on "
        "the same resampled images and seeds, * where its interval excludes 0 (a difference beyond the noise); "
        "\"(fewer seeds)\" instead where the row finished fewer seeds than the baseline (e.g. a search's repeats "
        "stopped early): its interval then rests on those seeds' images alone and is never starred. "
        f"{MISSING} where the trials saved no per-image records. " + _crop_sentence(trials),
        "",
    ]
    head += provenance_lines(provenance, trials)
    if notes:
        head += ["Notes:", ""] + [f"- {note}" for note in notes] + [""]
    report = out / "report.md"
    report.write_text("\n".join(head + sections), encoding="utf-8")
    return report


def _headline(expected: int, done: int, stopped: int, missing: int, reruns: int = 0) -> str:
    """The report's first line about the trials: done, stopped early by a scheduler (by design), missing; and the
    trials that ran a cell (configuration, category, seed) already run, so that the count matches Tune's."""
    parts = [f"{done} of {expected} trials done" if done < expected else f"All {expected} trials done"]
    if stopped:
        parts.append(f"{stopped} stopped early by the scheduler (by design: see the search section)")
    line = ", ".join(parts) + "."
    if reruns:
        line += (f" {reruns} more ran a configuration, category and seed already run (a rerun, or a search that "
                 f"drew the same configuration again; the latest finished one is used): {expected + reruns} in all.")
    return f"{line} **{missing} missing.**" if missing else line


def _crop_sentence(trials) -> str:
    """Which pixel crop the trials' pixel metrics used (the reference crops MVTec maps to 224 of 256)."""
    crops = trials.get("eval_center_crop")
    if crops is None or crops.dropna().empty:
        return "Pixel metrics on the whole map (no crop recorded)."
    values = sorted({int(c) for c in crops.dropna()})
    if values == [0]:
        return "Pixel metrics on the whole map."
    return "Pixel metrics on the centre crop of side " + ", ".join(str(v) for v in values if v) + " px" + (
        " (some trials uncropped)." if 0 in values else ".")


def _draw_figures(table: StudyTable, folder: Path) -> tuple[dict[str, Path], list[str]]:
    """Figures of one study; a figure that fails is reported as a note instead of stopping the report."""
    drawn: dict[str, Path] = {}
    notes: list[str] = []
    jobs = [("overview", lambda ax: _overview(table, ax), (6.5, 4.0))]
    for metric in table.spec.metrics:
        longest = max((len(str(label)) for label in table.summary["label"]), default=1)
        size = (max(5.0, 2.5 + 1.1 * len(table.summary)),
                1.6 + 0.45 * max(len(table.categories), 1) + (0.07 * longest if longest > 8 else 0.0))
        jobs.append((f"per_category-{metric}", lambda ax, m=metric: figures.plot_category_heatmap(
            category_matrix(table, m), m, ax=ax), size))
    for suffix, draw, size in jobs:
        stem = folder / f"{table.name}-{suffix}"
        try:
            with sns.axes_style("whitegrid"):
                ax = figures.new_axes(*size)
                draw(ax)
                ax.set_title(table_title(table) if suffix == "overview" else
                             f"{METRIC_NAMES[suffix.split('-', 1)[1]]} per category ({table.dataset}, {table.preset})",
                             fontsize=9)
                drawn[suffix] = figures.save_figure(ax.figure, stem)[0]
        except Exception as error:  # a figure must not cost the tables; say what failed
            log.warning("figure %s failed: %s", stem.name, error)
            notes.append(f"figure {stem.name} could not be drawn ({type(error).__name__}: {error}).")
    return drawn, notes


def _draw_gallery(table: StudyTable, folder: Path) -> Path | None:
    """The map gallery of the table's first category and seed, or None if its trials saved no records."""
    from reports.gallery import draw_gallery
    from reports.intervals import attach_records
    from reports.tables import _select

    done = table.done_trials
    if done is None or done.empty or not table.categories:
        return None
    category = table.categories[0]
    first = done[done["category"] == category]
    if first.empty:
        return None
    first = first[first["seed"] == first["seed"].min()]
    records = attach_records(first)
    by_condition = {}
    for _, row in table.summary.iterrows():
        trials = _select(first, {c: row[c] for c in table.conditions})
        found = [records[t] for t in trials["trial_id"] if t in records]
        if found:
            by_condition[str(row["label"])] = found[0]
    if not by_condition:
        return None
    baseline = table.baseline if table.baseline in by_condition else next(iter(by_condition))
    try:
        figure = draw_gallery(by_condition, baseline, category)
    except Exception as error:  # a gallery must not cost the tables
        log.warning("gallery of %s failed: %s", table.name, error)
        return None
    try:
        return figures.save_figure(figure, folder / f"{table.name}-gallery")[0]
    finally:
        import matplotlib.pyplot as plt

        plt.close(figure)


def _overview(table: StudyTable, ax) -> None:
    """The study's main figure: a curve for a sweep (wide tables), grouped bars otherwise."""
    spec, summary = table.spec, table.summary
    if spec.layout == "wide":
        extras = [c for c in table.conditions if c != spec.condition]
        ours = summary.assign(series=summary[extras].astype(str).agg(" · ".join, axis=1)) if extras else summary
        curve = None if table.paper_curve is None else table.paper_curve.rename(columns={"lambda_s": spec.condition})
        figures.plot_metric_curve(ours, spec.condition, spec.metrics[0], paper=curve,
                                  series="series" if extras else None, ax=ax)
    else:
        figures.plot_grouped_bars(summary, list(spec.metrics), ax=ax)
        ax.set_xlabel(" / ".join(CONDITION_NAMES.get(c, c) for c in table.conditions))


def _section(table: StudyTable, files: dict[str, dict[str, Path]], figs: dict[str, Path], out: Path,
             breakdown=None, defect_files: dict[str, dict[str, Path]] | None = None) -> str:
    def link(path: Path) -> str:
        return os.path.relpath(path, out).replace(os.sep, "/")

    main = files["main"]
    lines = [f"## {table_title(table)}", ""]
    lines.append(f"**{table.missing.sentence()}**" if table.missing.missing else table.missing.sentence())
    lines += ["", to_markdown(summary_display(table), table_title(table)).split("\n", 2)[2].rstrip(), ""]
    lines.append(f"- Table: [Markdown]({link(main['md'])}) · [LaTeX]({link(main['tex'])}) · "
                 f"[CSV]({link(main['csv'])})")
    for metric in table.spec.metrics:
        f = files[metric]
        lines.append(f"- Per category, {METRIC_NAMES[metric]}: [Markdown]({link(f['md'])}) · "
                     f"[LaTeX]({link(f['tex'])}) · [CSV]({link(f['csv'])})")
    for metric, f in (defect_files or {}).items():
        lines.append(f"- Per defect type, {METRIC_NAMES[metric]}: [Markdown]({link(f['md'])}) · "
                     f"[LaTeX]({link(f['tex'])}) · [CSV]({link(f['csv'])})")
    lines.append("")
    if defect_files:
        lines += [f"Per defect type, {METRIC_NAMES['image_auroc']}. {DEFECT_NOTE}", "",
                  to_markdown(defect_display(breakdown, table, "image_auroc"), "").split("\n", 2)[2].rstrip(), ""]
    for suffix, path in figs.items():
        lines += [f"![{table.name} {suffix}]({link(path)}) ([PDF]({link(path.with_suffix('.pdf'))}))", ""]
    return "\n".join(lines)


def _search_section(trials, table: StudyTable, out: Path) -> tuple[str, list[str]]:
    """The search section (every trial's parameters, stopped trials, importances) of a searched study, else ""."""
    from reports import search

    group = trials[(trials["study"] == table.spec.study) & (trials["dataset"] == table.dataset)
                   & (trials["preset"] == table.preset)]
    if not search.is_searched(group):
        return "", []
    try:
        metrics = search.searched_metrics(trials.attrs.get("experiment_dirs", {}), group)
        return search.write_search(search.search_report(group, metrics=metrics), table.name, table_title(table),
                                   out / "tables",
                                   out / "figures",
                                   lambda path: os.path.relpath(path, out).replace(os.sep, "/")), []
    except Exception as error:  # the search section must not cost the tables; say what failed
        log.warning("search section of %s failed: %s", table.name, error)
        return "", [f"search section of {table.name} could not be written ({type(error).__name__}: {error})."]
