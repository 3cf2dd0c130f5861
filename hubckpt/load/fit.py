"""Whether a revision's training state fits the optimizer, scheduler and scaler given to restore: the checks
both restore paths make (`restore.py` for one process, `shards.py` for a multi-rank revision) before anything
is changed. Each returns the differences, [] when it fits."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def class_of(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def check_optimizer(optimizer: torch.optim.Optimizer, saved: dict, recorded_class: str | None) -> list[str]:
    """Why `saved` (an optimizer state dict) cannot go into `optimizer`; [] when it can."""
    import torch

    if recorded_class and recorded_class != class_of(optimizer):
        return [f"optimizer type: revision {recorded_class}, given {class_of(optimizer)}"]
    problems = []
    groups, saved_groups = optimizer.param_groups, saved.get("param_groups", [])
    if len(groups) != len(saved_groups):
        return [f"optimizer param groups: revision {len(saved_groups)}, given {len(groups)}"]
    for i, (g, s) in enumerate(zip(groups, saved_groups)):
        if len(g["params"]) != len(s.get("params", [])):
            problems.append(
                f"optimizer param group {i}: revision {len(s.get('params', []))} parameters, given {len(g['params'])}"
            )
        # Another optimizer type lacks some of this one's options (Trainer checkpoints do not record the
        # class). Extra keys are normal: schedulers add initial_lr, max_lr, ... to the groups.
        lacking = sorted(set(optimizer.defaults) - set(s))
        if lacking:
            problems.append(
                f"optimizer param group {i}: the revision's optimizer has no {', '.join(lacking)} "
                "(another optimizer type?)"
            )
    if problems:
        return problems
    params = {pid: p for g, s in zip(groups, saved_groups) for pid, p in zip(s["params"], g["params"])}
    for pid, state in (saved.get("state") or {}).items():
        param = params.get(pid)
        if param is None:
            problems.append(f"optimizer state for parameter {pid}, which no param group lists")
            continue
        for key, value in state.items():
            if (
                isinstance(value, torch.Tensor)
                and value.dim() == param.dim()
                and value.dim() > 0
                and tuple(value.shape) != tuple(param.shape)
            ):
                problems.append(
                    f"optimizer state {key} of parameter {pid}: shape {tuple(value.shape)}, "
                    f"parameter {tuple(param.shape)}"
                )
    return problems


def check_keys(kind: str, obj: Any, saved: dict, recorded_class: str | None) -> list[str]:
    """Why `saved` (a scheduler's or scaler's state dict) cannot go into `obj`; [] when it can."""
    if recorded_class and recorded_class != class_of(obj):
        return [f"{kind} type: revision {recorded_class}, given {class_of(obj)}"]
    ours, theirs = set(obj.state_dict()), set(saved)
    if kind == "scaler" and ours and not theirs:
        return ["grad scaler: the revision's scaler state is empty (it was disabled), this one is enabled"]
    if kind != "scaler" and ours != theirs:
        return [
            f"{kind} state keys differ (another {kind} type?): only in the revision {sorted(theirs - ours)}, "
            f"only here {sorted(ours - theirs)}"
        ]
    return []


__all__ = ["check_keys", "check_optimizer", "class_of"]
