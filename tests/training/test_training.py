import pytest
import torch

from dsr import DSR, preset
from dsr.training import (Schedule, TrainingData, learning_rate, load_state, run_stage, run_stages, save_state,
                          stages_for, train_dsr)
from dsr.variants import VARIANTS, apply_variant


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(6, 3, 64, 64, generator=torch.Generator().manual_seed(3))


def _fresh_model(config) -> DSR:
    torch.manual_seed(config.seed)
    return DSR(config)


@pytest.mark.parametrize("stage", ["stage1", "stage2", "stage3"])
def test_stop_and_resume_gives_identical_weights(stage: str, images: torch.Tensor, tmp_path) -> None:
    config = preset("tiny", stage1_iterations=6, stage2_iterations=6, stage3_iterations=6)
    data = TrainingData(images)
    straight = _fresh_model(config)
    run_stage(stage, straight, data)

    halves = _fresh_model(config)
    half_state = run_stage(stage, halves, data, stop_after=3)
    assert half_state["iteration"] == 3 and not half_state["finished"]
    path = save_state(half_state, tmp_path / f"{stage}.pt")
    resumed = _fresh_model(config)  # a new process would start from fresh weights and the saved state
    final = run_stage(stage, resumed, data, resume=load_state(path))
    assert final["iteration"] == 6 and final["finished"]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_resume_from_another_stage_is_refused(images: torch.Tensor) -> None:
    model = _fresh_model(preset("tiny"))
    state = run_stage("stage3", model, TrainingData(images), stop_after=1)
    with pytest.raises(ValueError, match="cannot resume stage2 from a stage3 state"):
        run_stage("stage2", model, TrainingData(images), resume=state)


def test_each_stage_trains_only_its_modules(images: torch.Tensor) -> None:
    model = _fresh_model(preset("tiny"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run_stage("stage3", model, TrainingData(images))
    changed = {k.split(".")[0] for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"upsampling"}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run_stage("stage2", model, TrainingData(images))
    changed = {k.split(".")[0] for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"restriction_hi", "restriction_lo", "object_decoder", "anomaly_detection"}


def test_callback_gets_losses_and_checkpoints(images: torch.Tensor) -> None:
    events = []
    model = _fresh_model(preset("tiny", stage2_iterations=4))
    run_stage("stage2", model, TrainingData(images), callback=events.append, report_every=2, checkpoint_every=3)
    assert [e.iteration for e in events] == [2, 3, 4]
    assert [e.state is not None for e in events] == [False, True, True]
    assert set(events[0].losses) == {"loss_focal", "loss_feature", "loss_image"}
    assert all(v >= 0 for e in events for v in e.losses.values())


class Preempted(Exception):
    """Raised from a callback: the process died there (a killed worker, a reclaimed spot node)."""


def _equal_weights(a: DSR, b: DSR) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def test_run_stages_resumes_across_stages_from_the_last_state(images: torch.Tensor) -> None:
    """Killed in stage 3: the last saved state (from stage 3) skips stage 2 and continues stage 3 to the same
    weights as an uninterrupted run."""
    config = preset("tiny", stage2_iterations=2, stage3_iterations=4)
    data = TrainingData(images)
    straight = _fresh_model(config)
    run_stages(["stage2", "stage3"], straight, data)

    saved = []

    def save_then_die(event) -> None:
        if event.state is not None:
            saved.append(event.state)
        if event.stage == "stage3" and event.iteration == 3:
            raise Preempted

    with pytest.raises(Preempted):
        run_stages(["stage2", "stage3"], _fresh_model(config), data, callback=save_then_die,
                   schedule=Schedule(report_every=1, checkpoint_every=2))
    assert [(s["stage"], s["iteration"]) for s in saved] == [("stage2", 2), ("stage3", 2)]
    events = []
    resumed = _fresh_model(config)
    states = run_stages(["stage2", "stage3"], resumed, data, resume=saved[-1], callback=events.append,
                        schedule=Schedule(report_every=1))
    assert list(states) == ["stage3"] and states["stage3"]["finished"]
    assert [(e.stage, e.iteration) for e in events] == [("stage3", 3), ("stage3", 4)]
    _equal_weights(straight, resumed)


def test_run_stages_skips_a_stage_that_had_finished(images: torch.Tensor) -> None:
    config = preset("tiny", stage2_iterations=2, stage3_iterations=2)
    model = _fresh_model(config)
    finished = run_stage("stage2", model, TrainingData(images))
    events = []
    states = run_stages(["stage2", "stage3"], _fresh_model(config), TrainingData(images), resume=finished,
                        callback=events.append, schedule=Schedule(report_every=1))
    assert states["stage2"] is finished and {e.stage for e in events} == {"stage3"}
    with pytest.raises(ValueError, match="cannot resume stages stage2, stage3 from a stage1 state"):
        run_stages(["stage2", "stage3"], model, TrainingData(images),
                   resume={**finished, "stage": "stage1"})


def test_checkpoint_minutes_adds_checkpoints_by_wall_time(images: torch.Tensor) -> None:
    """Every iteration takes 25 s of (fake) wall time: with checkpoint_minutes=1, a checkpoint is due once 60 s
    passed since the stage started or last checkpointed (after iterations 3, 6: 75 s each), and at the end."""
    now = [0.0]
    checkpoints = []

    def on_event(event) -> None:
        now[0] += 25.0  # the iteration that led to this event took 25 s
        if event.state is not None:
            checkpoints.append(event.iteration)

    model = _fresh_model(preset("tiny", stage3_iterations=7))
    run_stage("stage3", model, TrainingData(images), callback=on_event, report_every=1, checkpoint_minutes=1.0,
              clock=lambda: now[0])
    assert checkpoints == [4, 7]  # the clock is read before an iteration's event: 75 s at 4, 150 - 75 at 7
    checkpoints.clear()
    now[0] = 0.0
    run_stage("stage3", _fresh_model(preset("tiny", stage3_iterations=4)), TrainingData(images),
              callback=on_event, report_every=1, clock=lambda: now[0])
    assert checkpoints == [4]  # off by default: only the stage's end


def test_schedule_intervals_per_stage() -> None:
    assert Schedule().intervals(1000) == (50, 0)
    assert Schedule(report_every=0, checkpoint_every=0, reports_per_stage=20, checkpoints_per_stage=5
                    ).intervals(100) == (5, 20)
    assert Schedule(report_every=0, reports_per_stage=20).intervals(3) == (1, 0)  # at least every iteration
    assert Schedule(report_every=7, checkpoint_every=3, checkpoints_per_stage=5).intervals(100) == (7, 3)
    with pytest.raises(ValueError, match="checkpoint_minutes"):
        Schedule(checkpoint_minutes=-1)


def test_train_dsr_resumes_a_preempted_run_from_its_folder(images: torch.Tensor, tmp_path) -> None:
    """train_dsr killed in stage 2 and called again with the same folder: the stages finished before are not
    trained again, the interrupted one goes on from its checkpoint, and the weights equal a run never stopped."""
    config = preset("tiny", stage2_iterations=4)
    straight = train_dsr(config, TrainingData(images), progress=False)

    def die_in_stage2(event) -> None:
        if event.stage == "stage2" and event.iteration == 3:
            raise Preempted

    with pytest.raises(Preempted):
        train_dsr(config, TrainingData(images), checkpoint_dir=tmp_path, progress=False, report_every=1,
                  checkpoint_every=2, callback=die_in_stage2)
    assert load_state(tmp_path / "stage2.pt")["iteration"] == 2 and not (tmp_path / "stage3.pt").exists()
    events = []
    again = train_dsr(config, TrainingData(images), checkpoint_dir=tmp_path, progress=False, report_every=1,
                      callback=events.append)
    assert [(e.stage, e.iteration) for e in events] == [("stage2", 3), ("stage2", 4), ("stage3", 1), ("stage3", 2)]
    assert list(again.states) == ["stage2", "stage3"]
    _equal_weights(straight.model, again.model)


def test_learning_rate_schedule() -> None:
    assert learning_rate(2e-4, 79, 100, 0.8, 0.1) == 2e-4
    assert learning_rate(2e-4, 80, 100, 0.8, 0.1) == pytest.approx(2e-5)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_trains_end_to_end(variant: str, images: torch.Tensor, tmp_path) -> None:
    config = apply_variant(preset("tiny"), variant)
    run = train_dsr(config, TrainingData(images), checkpoint_dir=tmp_path, progress=False)
    assert list(run.states) == stages_for(config)
    assert all(state["finished"] for state in run.states.values())
    assert (tmp_path / "stage3.pt").exists() == config.use_upsampling
    prediction = run.model.predict(images[:2])
    assert torch.isfinite(prediction.image_scores).all() and prediction.pixel_maps.shape == (2, 64, 64)
    # a second call finds every stage finished and trains nothing more
    again = train_dsr(config, TrainingData(images), checkpoint_dir=tmp_path, progress=False)
    for a, b in zip(run.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)


def test_supervised_mode_mixes_real_anomalies(images: torch.Tensor) -> None:
    masks = torch.zeros(2, 1, 64, 64)
    masks[:, :, 10:30, 10:30] = 1
    data = TrainingData(images, anomalous=images[:2], anomalous_masks=masks, supervised_probability=1.0)
    events = []
    run_stage("stage2", _fresh_model(preset("tiny")), data, callback=events.append, report_every=1)
    # every sample is a real anomaly: nothing has a reconstruction target, so those terms are zero
    assert all(e.losses["loss_feature"] == 0 and e.losses["loss_image"] == 0 for e in events)
    assert all(e.losses["loss_focal"] > 0 for e in events)


def test_unknown_variant_is_named() -> None:
    with pytest.raises(ValueError, match="known variants: DSR, DSR_img"):
        apply_variant(preset("tiny"), "DSR_x")


def test_micro_batches_give_the_whole_batch_gradient(images: torch.Tensor) -> None:
    """Share-weighted micro-batch gradients equal the whole batch's. Run in float64 so that the comparison checks
    the arithmetic, not which fp32 convolution kernel this CPU picked (summation order differs between CPUs and
    between batch sizes; float64 rounding is ~1e-16, so a real mistake stands far above the 1e-9 tolerance)."""
    from dsr.anomalies import make_strategy
    from dsr.training.loop import freeze_for
    from dsr.training.steps import stage2_step

    gradients, losses = [], []
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        for micro in (0, 1):
            model = _fresh_model(preset("tiny", micro_batch_size=micro)).double()
            freeze_for(model, "stage2")
            _, parts = stage2_step(model, TrainingData(images.double()), torch.Generator().manual_seed(5),
                                   torch.device("cpu"), make_strategy(model.config), None)
            gradients.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
            losses.append(parts)
    finally:
        torch.set_default_dtype(default_dtype)
    assert gradients[0].keys() == gradients[1].keys() and len(gradients[0]) > 0
    # biases in front of an InstanceNorm have a true gradient of 0 (the norm removes them): pure rounding noise
    weights = [name for name, grad in gradients[0].items() if grad.ndim >= 2]
    assert len(weights) > 20
    for name in weights:
        grad = gradients[0][name]
        assert grad.dtype == torch.float64
        assert (grad - gradients[1][name]).abs().max() <= 1e-9 * grad.abs().max() + 1e-12, name
    for name, value in losses[0].items():
        assert value.item() == pytest.approx(losses[1][name].item(), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(("stage", "decays"), [("stage2", True), ("stage3", False)])
def test_stage3_learning_rate_never_decays_by_default(stage: str, decays: bool, images: torch.Tensor) -> None:
    """The reference's stage-3 milestones lie past its last epoch; stage 2 decays x0.1 at 80%."""
    config = preset("tiny", stage2_iterations=5, stage3_iterations=5)
    state = run_stage(stage, _fresh_model(config), TrainingData(images))
    last_lr = state["optimizer"]["param_groups"][0]["lr"]
    base = config.stage2_lr if stage == "stage2" else config.stage3_lr
    assert last_lr == pytest.approx(base * config.lr_decay_factor if decays else base)


def test_stage2_tells_the_strategy_its_progress_before_every_step_also_when_resumed(images: torch.Tensor,
                                                                                    monkeypatch) -> None:
    from dsr.training import loop

    seen: list[float] = []
    made = loop.make_strategy

    def recording(config):
        strategy = made(config)
        original = strategy.set_progress

        def set_progress(iteration: int, total: int) -> None:
            original(iteration, total)
            seen.append(strategy.progress)
        strategy.set_progress = set_progress
        return strategy

    monkeypatch.setattr(loop, "make_strategy", recording)
    config = preset("tiny", stage2_iterations=4, sampling_strategy="curriculum")
    state = run_stage("stage2", _fresh_model(config), TrainingData(images), stop_after=2)
    run_stage("stage2", _fresh_model(config), TrainingData(images), resume=state)
    assert seen == [0.0, 0.25, 0.5, 0.75]  # iterations 0, 1 | resumed at 2, 3 of 4
