"""What a mirror run copies: the source commits the target has no copy of yet, in order, and what is in the way.

The mapping source commit → target commit is read back from the target's branch histories (each copy
carries `Mirrored-From: <sha>`, `mirror_io.copied_from`): the hub itself is the journal. Every branch's
history is then walked, `main`'s included:

- a revision branch's commits not copied yet become steps committed on its staging branch;
- `main`'s commits after the one the target's `main` is a copy of become steps committed on `main`
  itself (a commit of `main` that a revision branch was started from is copied once, on `main`);
- steps run oldest first (a commit after its parent; an index commit after the revisions it lists).

A target branch of a source branch's name that is not a copy of a point of its history (nor `main`
holding commits not copied from the source's) is a conflict, listed with why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..hub.writer import MAIN, is_staging_branch
from .mirror_io import MirrorIO, copied_from, history


@dataclass(frozen=True)
class Step:
    """One source commit to copy onto the copy of its parent, for `branch` (MAIN: committed on `main`)."""

    commit: str
    parent: str
    branch: str
    title: str
    message: str


@dataclass
class Plan:
    """What one run copies, and what it found on the target."""

    steps: list[Step] = field(default_factory=list)  # in the order they are copied
    branches: dict[str, str] = field(default_factory=dict)  # revision branch → source head, to create or move
    unchanged: list[str] = field(default_factory=list)  # revision branches the target has as the source
    conflicts: list[str] = field(default_factory=list)  # target branches in the way, each with why
    copied: dict[str, str] = field(default_factory=dict)  # source commit → target commit, before the run
    main_head: str = ""  # the target's `main`, where its first step goes
    bytes_total: int = 0  # what the steps will read from the source, at most


def make_plan(io: MirrorIO, src_branches: dict[str, str], dst_branches: dict[str, str]) -> Plan:
    """The steps that bring the target up to the source, from both hubs' refs and histories."""
    plan = Plan()
    revisions = sorted(b for b in src_branches if b != MAIN and not is_staging_branch(b))
    # Every staging branch too: one a killed run left for a revision pruned at the source since holds copies.
    ours = {b for b in dst_branches if b in src_branches or is_staging_branch(b)}
    dst_histories = {b: history(io.dst.reader, b) for b in sorted(ours | {MAIN})}
    for chain in dst_histories.values():
        for commit in chain:
            if found := copied_from(commit):
                plan.copied.setdefault(found, commit.commit_id)
    dst_main, src_main = dst_histories[MAIN], history(io.src, MAIN)
    plan.main_head = dst_main[-1].commit_id
    plan.copied.setdefault(src_main[0].commit_id, dst_main[0].commit_id)  # the roots (create_repo's commits)

    on_main = {c.commit_id for c in src_main}
    dated: list[tuple[Any, int, Step]] = []  # (when, tie-break, step)
    planned: set[str] = set()

    def add(chain: list[Any], branch: str, start: int) -> None:
        for parent, commit in zip(chain[start:], chain[start + 1 :]):
            if commit.commit_id in plan.copied or commit.commit_id in planned:
                continue
            if branch != MAIN and commit.commit_id in on_main:
                continue  # copied on main, as main's own step
            planned.add(commit.commit_id)
            step = Step(commit.commit_id, parent.commit_id, branch, commit.title or "", commit.message or "")
            dated.append((commit.created_at, len(dated), step))

    for name in revisions:
        chain = history(io.src, name)
        head, there = src_branches[name], dst_branches.get(name)
        if there is not None and plan.copied.get(head) == there:
            plan.unchanged.append(name)
            continue
        if there is not None and there not in {plan.copied.get(c.commit_id) for c in chain}:
            plan.conflicts.append(f"{name} (target at {there[:12]}, not a copy of the source's {head[:12]})")
        add(chain, name, 0)
        plan.branches[name] = head
    ids = [c.commit_id for c in src_main]
    at = next((i for i in reversed(range(len(ids))) if plan.copied.get(ids[i]) == plan.main_head), None)
    if at is None:  # with force: the source's main is replayed on top of what the target has
        plan.conflicts.append(f"main (target at {plan.main_head[:12]} has commits not copied from the source)")
    add(src_main, MAIN, at or 0)
    plan.steps = _parents_first([step for _, _, step in sorted(dated, key=lambda d: (d[0], d[1]))], plan.copied)
    plan.bytes_total = _bytes_to_read(io, plan.steps)
    return plan


def _parents_first(steps: list[Step], copied: dict[str, str]) -> list[Step]:
    """`steps` (oldest first) reordered only where a commit came before its parent (dates equal to the second)."""
    done, out, pending = set(copied), [], steps
    while pending:
        waiting, later = [], {s.commit for s in pending}
        for step in pending:
            if step.parent in done or step.parent not in later:
                out.append(step)
                done.add(step.commit)
            else:
                waiting.append(step)
        if len(waiting) == len(pending):  # a cycle cannot happen in a git history; keep the rest as listed
            out += waiting
            break
        pending = waiting
    return out


def _bytes_to_read(io: MirrorIO, steps: list[Step]) -> int:
    """The files each step changes, each object counted once: what the run reads at most."""
    seen: set[str] = set()
    total = 0
    for step in steps:
        now, before = io.listing(io.src, step.commit), io.listing(io.src, step.parent)
        for path, entry in now.items():
            if path != ".gitattributes" and before.get(path) != entry and entry.key not in seen:
                seen.add(entry.key)
                total += entry.size
    return total


__all__ = ["Plan", "Step", "make_plan"]
