"""restore(): bad input is refused with a list of what differs, and nothing is half restored."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import hubckpt
from hubckpt.errors import RevisionLookupError, StateMismatchError, TrainingStateMissingError


def _model(seed: int = 0, hidden: int = 6, name: str = "head") -> nn.Module:
    torch.manual_seed(seed)
    return nn.ModuleDict({"body": nn.Linear(4, hidden), name: nn.Linear(hidden, 2)})


def _step(model: nn.Module, optimizer) -> None:
    x = torch.randn(3, 4)
    out = model["head"](model["body"](x)) if "head" in model else model["other"](model["body"](x))
    out.sum().backward()
    optimizer.step()


@pytest.fixture(scope="module")
def published(local_hub, tmp_path_factory):
    """A repo with two Checkpointer revisions (steps 10 and 20) of an AdamW + StepLR run."""
    repo_id = "alice/restore-bad-input"
    model = _model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
    with hubckpt.Checkpointer(
        repo_id,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        hub=local_hub.url,
        monitor="loss",
        spool_dir=tmp_path_factory.mktemp("spool"),
    ) as ckpt:
        for step in (10, 20):
            _step(model, optimizer)
            scheduler.step()
            ckpt.save(step, metrics={"loss": 1.0 / step})
    return repo_id, {k: v.clone() for k, v in model.state_dict().items()}


def _unchanged(model: nn.Module, before: dict) -> bool:
    return all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_by_step_and_by_name(local_hub, published):
    repo_id, final = published
    model = _model(seed=1)
    first = hubckpt.restore(repo_id, step=10, model=model, hub=local_hub.url)
    assert (first.revision, first.step, first.metrics) == ("step-0000010", 10, {"loss": 0.1})
    assert len(first.commit) == 40 and first.parts == ["rng"]
    latest = hubckpt.restore(repo_id, model=model, hub=local_hub.url)
    assert latest.step == 20 and _unchanged(model, final)
    assert hubckpt.restore(repo_id, "best", model=_model(2), hub=local_hub.url).revision == "step-0000020"
    with pytest.raises(
        RevisionLookupError, match=r"no revision at step 15; nearest: step-0000010 \(step 10\), step-0000020"
    ):
        hubckpt.restore(repo_id, step=15, model=model, hub=local_hub.url)


def test_mismatched_names_and_shapes_are_listed_and_strict_false_reports_them(local_hub, published):
    repo_id, final = published
    model = _model(seed=3, hidden=5, name="other")  # body: other shapes; head renamed to other
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(StateMismatchError) as err:
        hubckpt.restore(repo_id, model=model, hub=local_hub.url)
    lines = err.value.mismatches
    assert "shape of body.weight: revision (6, 4), model (5, 4)" in lines
    assert "missing in the revision: other.weight (2, 5)" in lines
    assert "not in the model: head.bias (2,)" in lines
    assert len(lines) == 6 and "nothing was restored" in str(err.value)
    assert _unchanged(model, before)

    partial = _model(seed=3, name="other")  # same shapes, one layer renamed
    result = hubckpt.restore(repo_id, model=partial, hub=local_hub.url, strict=False)
    assert sorted(result.mismatches) == [
        "missing in the revision: other.bias (2,)",
        "missing in the revision: other.weight (2, 6)",
        "not in the model: head.bias (2,)",
        "not in the model: head.weight (2, 6)",
    ]
    assert torch.equal(partial["body"].weight, final["body.weight"])


def test_revision_without_training_state_says_how_to_publish_one(local_hub, tmp_path):
    repo_id = "alice/restore-weights-only"
    model = _model()
    with hubckpt.Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "spool") as pub:
        pub.publish(state_dict=model.state_dict(), step=1)
    with pytest.raises(TrainingStateMissingError, match=r"has no training_state/.*Checkpointer"):
        hubckpt.restore(repo_id, model=_model(1), hub=local_hub.url)


@pytest.mark.parametrize("kind", ["optimizer type|another optimizer type", "param groups", "scheduler type"])
def test_another_optimizer_or_scheduler_is_refused_and_nothing_is_changed(local_hub, published, kind):
    repo_id, _ = published
    model = _model(seed=4)
    if kind.startswith("optimizer type"):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    elif kind == "param groups":
        optimizer = torch.optim.AdamW(
            [{"params": model["body"].parameters()}, {"params": model["head"].parameters(), "lr": 0.01}], lr=0.1
        )
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = (
        torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
        if kind == "scheduler type"
        else torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
    )
    _step(model, optimizer)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt_before = {(pid, k): v.clone() for pid, s in optimizer.state_dict()["state"].items() for k, v in s.items()}
    sched_before = scheduler.state_dict()
    rng_before = torch.get_rng_state()
    with pytest.raises(StateMismatchError, match=kind) as err:
        hubckpt.restore(repo_id, model=model, optimizer=optimizer, scheduler=scheduler, hub=local_hub.url)
    assert "nothing was restored" in str(err.value)
    assert _unchanged(model, before)
    after = {(pid, k): v for pid, s in optimizer.state_dict()["state"].items() for k, v in s.items()}
    assert after.keys() == opt_before.keys() and all(torch.equal(after[k], opt_before[k]) for k in after)
    assert scheduler.state_dict() == sched_before and torch.equal(torch.get_rng_state(), rng_before)


def test_restored_optimizer_state_is_fresh_memory_not_a_memory_map(local_hub, published):
    repo_id, _ = published
    model = _model(seed=5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    weights_before = [p.data_ptr() for p in model.parameters()]
    hubckpt.restore(repo_id, model=model, optimizer=optimizer, hub=local_hub.url)
    assert [p.data_ptr() for p in model.parameters()] == weights_before  # read into the model's own tensors
    state = optimizer.state[model["body"].weight]
    assert state["exp_avg"].untyped_storage().filename is None  # not file-backed (no copy-on-write faults)


def test_optimizer_type_is_recognised_without_a_recorded_class():
    """Trainer checkpoints record no class: another optimizer type shows in the param groups' options."""
    from hubckpt.load.restore import check_optimizer

    model = _model()
    adamw = torch.optim.AdamW(model.parameters(), lr=0.1)
    _step(model, adamw)
    saved = adamw.state_dict()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    assert any("another optimizer type" in p and "momentum" in p for p in check_optimizer(sgd, saved, None))
    assert check_optimizer(torch.optim.AdamW(model.parameters(), lr=0.5), saved, None) == []
    half = torch.optim.AdamW(model["body"].parameters(), lr=0.1)
    assert check_optimizer(half, saved, None) == ["optimizer param group 0: revision 4 parameters, given 2"]


def test_a_checkpointer_revision_pulled_as_trainer_checkpoint_has_plain_files(local_hub, published, tmp_path):
    import json

    from hubckpt.integrations.trainer_resume import pull_trainer_checkpoint

    folder = pull_trainer_checkpoint(published[0], None, tmp_path / "ckpt", hub=local_hub.url)
    optimizer = torch.load(folder / "optimizer.pt", weights_only=True)  # no allowlist: plain tensors and numbers
    assert set(optimizer) == {"state", "param_groups"} and len(optimizer["state"]) == 4
    rng = torch.load(folder / "rng_state.pth", weights_only=True)
    assert set(rng) >= {"python", "numpy", "cpu"} and isinstance(rng["numpy"][1], list)
    assert json.loads((folder / "trainer_state.json").read_text())["global_step"] == 20
    assert (folder / "model.safetensors").is_file() and not (folder / "training_state").exists()


def test_grad_scaler_and_loop_state_round_trip(local_hub, tmp_path):
    repo_id = "alice/restore-scaler"
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=3)
    scaler.scale(torch.tensor(1.0))
    scaler.update(512.0)  # a scale the default constructor would not have
    with hubckpt.Checkpointer(
        repo_id, model=model, optimizer=optimizer, scaler=scaler, hub=local_hub.url, spool_dir=tmp_path / "spool"
    ) as ckpt:
        _step(model, optimizer)
        ckpt.save(3, tokens=3000, epoch=0.5, extra={"sampler": [1, 2, 3]}, metrics={"loss": 2.0})
    fresh = torch.amp.GradScaler("cpu")
    result = hubckpt.restore(
        repo_id,
        model=_model(9),
        optimizer=torch.optim.SGD(_model(9).parameters(), lr=0.1, momentum=0.9),
        scaler=fresh,
        hub=local_hub.url,
        strict=False,
    )
    assert fresh.state_dict() == scaler.state_dict() and fresh.get_scale() == 512.0
    assert (result.step, result.tokens, result.epoch, result.extra) == (3, 3000, 0.5, {"sampler": [1, 2, 3]})
    assert "scaler" in result.parts and result.metrics == {"loss": 2.0}
