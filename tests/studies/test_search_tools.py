"""The search tools of a searched study, in-process and without Ray running: --metric (and multi-objective),
--repeats (RepeatedSearch), the Optuna journal kept with the experiment, and the --tracker options."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest
from ray.tune.search import Searcher

from studies import ablation, sampling
from studies.runner.cli import build_parser, check_options
from studies.runner.objective import PLACEHOLDERS, SEARCH_METRICS, resolve_metrics, search_metrics
from studies.runner.optuna_store import JOURNAL, local_journal, optuna_search, optuna_storage
from studies.runner.synced_files import upload
from studies.runner.repeats import RepeatedSearch, repeat_runs
from studies.runner.space import build_param_space, validate_space
from studies.runner.study import StudyError
from studies.runner.tracking import check_tracker, tracker_callbacks, tracking_uri


def parse(study, *argv: str):
    return build_parser(study).parse_args(["--preset", "tiny", *argv])


# --------------------------------------------------------------------------------------------- --metric


@pytest.mark.parametrize(("argv", "message"), [
    (["--metric", "foo"], "--metric foo: unknown metric"),
    (["--metric", "pixel_ap", "pixel_ap"], "given twice"),
    (["--metric", "auto", "aupro"], "auto stands alone"),
    (["--repeats", "0"], "--repeats must be >= 1, got 0"),
    (["--tracking-uri", "file:///tmp/x"], "--tracking-uri is for --tracker mlflow"),
])
def test_bad_search_options_are_one_line_naming_the_option(argv: list[str], message: str) -> None:
    with pytest.raises(StudyError, match=message):
        check_options(parse(sampling.STUDY, *argv))


def test_metric_and_repeats_belong_to_searched_studies_only() -> None:
    with pytest.raises(SystemExit):
        parse(ablation.STUDY, "--metric", "pixel_ap")
    assert not hasattr(parse(ablation.STUDY), "repeats")
    assert parse(sampling.STUDY).metric == ["auto"] and parse(sampling.STUDY).repeats == 1


def test_auto_is_pixel_ap_with_masks_and_image_auroc_without() -> None:
    assert resolve_metrics(["auto"], has_masks=True) == ("pixel_ap",)
    assert resolve_metrics(["auto"], has_masks=False) == ("image_auroc",)
    assert resolve_metrics(["image_auroc", "aupro"], has_masks=True) == ("image_auroc", "aupro")
    with pytest.raises(StudyError, match="--metric aupro: the data has no masks"):
        resolve_metrics(["image_auroc", "aupro"], has_masks=False)


def test_every_searchable_metric_has_a_placeholder_and_is_reported_by_evaluation() -> None:
    import numpy as np

    from dsr.evaluation.evaluate import metrics_from_predictions

    scores, labels = np.array([0.1, 0.9, 0.4, 0.8]), np.array([0, 1, 0, 1])
    maps = np.random.default_rng(0).random((4, 8, 8)).astype(np.float32)
    masks = np.zeros((4, 8, 8))
    masks[1, :4], masks[3, 4:] = 1, 1
    reported = metrics_from_predictions(scores, maps, labels, masks, True, None)
    assert set(SEARCH_METRICS) == set(PLACEHOLDERS) and set(SEARCH_METRICS) <= set(reported)


def test_one_metric_is_a_single_objective_and_two_a_multi_objective_optuna_search() -> None:
    single = sampling.searcher(parse(sampling.STUDY, "--metric", "aupro"))
    assert single.metric == "aupro" and single.mode == "max"
    args = parse(sampling.STUDY, "--metric", "image_auroc", "pixel_ap")
    multi = sampling.searcher(args)
    assert multi.metric == ["image_auroc", "pixel_ap"] and multi.mode == ["max", "max"]
    assert multi._ot_study.directions and len(multi._ot_study.directions) == 2
    args.search_metrics = ["pixel_ap"]  # the harness's resolution wins over the raw option
    assert search_metrics(args) == ["pixel_ap"]


# -------------------------------------------------------------------------------------------- --repeats


class Recording(Searcher):
    """A searcher that suggests numbered configurations and records what it is told."""

    def __init__(self, metric) -> None:
        super().__init__(metric=metric, mode=["max"] * len(metric) if isinstance(metric, list) else "max")
        self.suggested, self.told = 0, []

    def suggest(self, trial_id: str) -> dict:
        self.suggested += 1
        return {"overrides": {"similarity_bound": 0.1 * self.suggested}}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.told.append((trial_id, result, error))


def test_repeat_runs_cross_categories_and_seeds() -> None:
    assert repeat_runs(["a", "b"], 2) == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]
    with pytest.raises(StudyError, match="--repeats must be >= 1"):
        repeat_runs(["a"], 0)


def test_each_suggestion_runs_on_every_category_and_seed_and_the_searcher_gets_the_means() -> None:
    inner = Recording(["image_auroc", "pixel_ap"])
    search = RepeatedSearch(inner, repeat_runs(["a", "b"], 2))
    configs = [search.suggest(f"t{i}") for i in range(8)]
    assert inner.suggested == 2  # two configurations, four runs each
    assert [(c["category"], c["seed"]) for c in configs[:4]] == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]
    assert {c["overrides"]["similarity_bound"] for c in configs[:4]} == {0.1}
    values = {"t0": (0.9, 0.2), "t1": (0.7, 0.4), "t2": (0.8, math.nan), "t3": (0.6, 0.6)}
    for trial_id, (image, pixel) in values.items():
        assert inner.told == []  # nothing before the group's last run ended
        search.on_trial_complete(trial_id, {"image_auroc": image, "pixel_ap": pixel})
    (primary, result, error), = inner.told
    assert primary == "t0" and not error
    assert result["image_auroc"] == pytest.approx(0.75, abs=1e-12)  # mean of 0.9, 0.7, 0.8, 0.6
    assert result["pixel_ap"] == pytest.approx(0.4, abs=1e-12)  # NaN left out: mean of 0.2, 0.4, 0.6


def test_a_group_without_any_value_is_a_failed_trial_for_the_searcher() -> None:
    inner = Recording("image_auroc")
    search = RepeatedSearch(inner, repeat_runs(["a"], 2))
    for trial_id in ("t0", "t1"):
        search.suggest(trial_id)
        search.on_trial_complete(trial_id, None, error=True)
    assert inner.told == [("t0", None, True)]


def test_repeated_search_state_round_trips_as_tune_saves_it() -> None:
    search = RepeatedSearch(Recording("image_auroc"), repeat_runs(["a"], 3))
    search.suggest("t0"), search.suggest("t1")
    restored = RepeatedSearch(Recording("image_auroc"), repeat_runs(["a"], 3))
    restored.set_state(pickle.loads(pickle.dumps(search.get_state())))
    assert restored.suggest("t2")["seed"] == 2 and restored.searcher.suggested == 0  # the same group goes on


def test_a_searched_study_takes_several_categories_but_refuses_seeds() -> None:
    args = parse(sampling.STUDY, "--strategies", "uniform", "--repeats", "2")
    space = build_param_space(sampling.STUDY, args, "/data", ["brick", "grass"])
    assert space["category"] == "brick" and space["seed"] == 0  # the searcher assigns both per trial
    assert validate_space(space, sampling.STUDY, args) == 0
    grid = parse(sampling.STUDY, "--grid", "--repeats", "3")
    with pytest.raises(StudyError, match="--repeats 3: repeats are for searches"):
        validate_space(build_param_space(sampling.STUDY, grid, "/data", ["brick"]), sampling.STUDY, grid)
    seeds = parse(sampling.STUDY, "--seeds", "2")
    with pytest.raises(StudyError, match="--seeds 2: .* --repeats N"):
        validate_space(build_param_space(sampling.STUDY, seeds, "/data", ["brick"]), sampling.STUDY, seeds)


# ------------------------------------------------------------------------------------ the Optuna journal


def test_the_optuna_study_is_a_journal_in_the_experiment_and_survives_tunes_pickling(tmp_path: Path) -> None:
    import optuna

    experiment = str(tmp_path / "sampling")
    journal = local_journal(experiment)
    assert journal == tmp_path / "sampling" / JOURNAL
    args = parse(sampling.STUDY, "--metric", "image_auroc", "--strategies", "uniform", "distance_band")
    args.optuna_journal, args.optuna_study_name = str(journal), "sampling"
    search = optuna_search(args, sampling.DefineByRun(["uniform", "distance_band"]))
    search.suggest("a")
    search.on_trial_complete("a", {"image_auroc": 0.75})
    revived = pickle.loads(pickle.dumps(search))  # what Tune does with the searcher on --resume
    revived.suggest("b")
    revived.on_trial_complete("b", {"image_auroc": 0.5})
    stored = optuna.load_study(study_name="sampling", storage=optuna_storage(journal))
    assert [t.value for t in stored.trials] == [0.75, 0.5]
    assert all(t.params["overrides/sampling_strategy"] in ("uniform", "distance_band") for t in stored.trials)


def test_a_cloud_experiments_journal_is_cached_locally_uploaded_and_found_again(tmp_path: Path) -> None:
    experiment = f"file://{tmp_path}/remote/sampling"  # a URI: handled as cloud storage
    from studies.runner import synced_files

    cache = tmp_path / "cache"
    original = synced_files.is_remote
    synced_files.is_remote = lambda location: str(location).startswith("file://")
    try:
        journal = local_journal(experiment, cache_dir=cache)
        assert cache in journal.parents and not journal.exists()
        journal.write_text("line 1\n")
        upload(journal, experiment, JOURNAL)
        assert (tmp_path / "remote" / "sampling" / JOURNAL).read_text() == "line 1\n"
        journal.unlink()
        assert local_journal(experiment, cache_dir=cache).read_text() == "line 1\n"  # a resume downloads it
    finally:
        synced_files.is_remote = original


# ------------------------------------------------------------------------------------------- --tracker


def test_the_tracker_defaults_to_a_file_store_in_the_experiment(tmp_path: Path) -> None:
    args = parse(ablation.STUDY)
    assert args.tracker == "none" and tracker_callbacks(args, str(tmp_path), "x") == []
    args.tracker = "mlflow"
    assert tracking_uri(args, str(tmp_path / "exp")) == f"sqlite:///{tmp_path / 'exp' / 'mlflow.db'}"
    args.tracking_uri = "http://mlflow.example:5000"
    assert tracking_uri(args, str(tmp_path / "exp")) == "http://mlflow.example:5000"


def test_tracker_mlflow_without_mlflow_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name == "mlflow":
            raise ImportError("No module named 'mlflow'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    with pytest.raises(StudyError, match="--tracker mlflow: mlflow is not installed"):
        check_tracker(parse(ablation.STUDY, "--tracker", "mlflow"))


# ------------------------------------------------------------------------------------------- baseline


def test_the_papers_dsr_is_the_searchs_first_configuration_and_asha_never_stops_it(tmp_path: Path) -> None:
    from ray.tune.experiment import Trial

    args = parse(sampling.STUDY, "--metric", "image_auroc")
    first = sampling.searcher(args).suggest("t0")
    assert first["overrides"] == {"sampling_strategy": "similarity_bound", "similarity_bound": 0.05}
    assert sampling.is_baseline(first, sampling.paper_lambda(args))
    assert not sampling.is_baseline({"overrides": {"sampling_strategy": "uniform"}}, 0.05)
    assert not sampling.is_baseline({"overrides": {"similarity_bound": 0.148}}, 0.05)
    no_baseline = parse(sampling.STUDY, "--strategies", "uniform")
    assert sampling.searcher(no_baseline).suggest("t0")["overrides"] == {"sampling_strategy": "uniform"}

    scheduler = sampling.scheduler(args)
    scheduler.set_search_properties("image_auroc", "max")
    trials = {name: Trial("dsr_trial", config={"overrides": overrides}, stub=True) for name, overrides in
              (("good", {"sampling_strategy": "uniform"}), ("baseline", first["overrides"]),
               ("bad", {"sampling_strategy": "distance_band"}))}
    decisions = {}
    for name, value in (("good", 0.9), ("baseline", 0.1), ("bad", 0.1)):
        scheduler.on_trial_add(None, trials[name])
        decisions[name] = scheduler.on_trial_result(None, trials[name], {
            "train_iteration": scheduler._max_t - 1, "image_auroc": value, "training_iteration": 1})
    assert decisions == {"good": "CONTINUE", "baseline": "CONTINUE", "bad": "STOP"}


def test_a_resumed_journal_is_not_given_the_baseline_again(tmp_path: Path) -> None:
    import optuna

    journal = tmp_path / "journal.log"
    args = parse(sampling.STUDY, "--metric", "image_auroc")
    args.optuna_journal, args.optuna_study_name = str(journal), "s"
    sampling.searcher(args)
    sampling.searcher(args)  # a second construction on the same journal (what a restart would do)
    study = optuna.load_study(study_name="s", storage=optuna_storage(journal))
    assert len(study.trials) == 1 and study.trials[0].state.name == "WAITING"


# ------------------------------------------------------------------------------------------ the space


@pytest.mark.parametrize("strategy", sorted(sampling.STRATEGY_PARAMS))
def test_every_drawn_configuration_of_the_search_space_is_a_valid_config(strategy: str) -> None:
    import optuna
    from ray._private.dict import unflatten_dict  # what OptunaSearch.suggest uses

    from studies.runner.trial import resolve_config

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(25):
        trial = study.ask()
        sampling.DefineByRun([strategy])(trial)
        config = resolve_config({"preset": "tiny", **unflatten_dict(dict(trial.params))})
        assert config.sampling_strategy == strategy
        assert set(config.sampling_params) == set(sampling.STRATEGY_PARAMS[strategy])
        study.tell(trial, 0.5)
