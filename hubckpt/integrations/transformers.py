"""`HubckptCallback`: publish every checkpoint a transformers `Trainer` saves, without blocking training.

    from hubckpt.integrations.transformers import HubckptCallback
    trainer = Trainer(..., callbacks=[HubckptCallback("me/exp1", keep_last=5)])
    trainer.train()   # each checkpoint-N/ becomes revision step-000000N; the last one is `final`

On every save the checkpoint folder is hard-linked into the publisher's spool (so
`save_total_limit` may delete it right away) and queued; conversion, upload and indexing happen in
the background. The checkpoint of the last step (`max_steps`) is marked final; when the Trainer did
not save at the last step a warning says so. At the end of training the callback waits for every
upload. The Trainer's
`log_history` is written beside each checkpoint as `log_history.json`, so a pulled revision gives
`resume_from_checkpoint` all it reads (`trainer_resume`).

Several processes (torchrun, `accelerate launch`): every process writes its share of `checkpoint-N/`
(process zero the model, optimizer and state; each rank its `rng_state_<rank>.pth`) and the Trainer
calls `on_save` with no barrier in between. So the callback waits in `on_save` until every process has
saved, then the world process zero alone publishes the folder (one revision, every rank's RNG state in
it; only that process opens a publisher and its spool). In `on_train_end` the other processes wait
until process zero's uploads are done, so `train()` returns on every rank with everything published.
The waits use a gloo group of the callback's own, whose timeout (`END_WAIT`) covers the last uploads.

A publish failure never stops training: it is logged, and the job stays in the spool's journal
(`hubckpt jobs REPO` lists it, `--retry` / `--drop` settle it). After `resume_from_checkpoint`, the
Trainer saves again the steps after the one it resumed from; those revisions are replaced by the
resumed run's checkpoints (`replace_on_resume=False` raises `RevisionCollisionError` instead, logged).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ..publishing import Publisher
from .trainer_resume import log_history_file

logger = logging.getLogger(__name__)

# How long the other processes wait for process zero at a save and at the end of training (its last
# uploads): the Trainer's own collectives time out after `ddp_timeout` (30 min), uploads may take longer.
END_WAIT = timedelta(hours=24)


def _wait_group() -> Any:
    """A process group for the callback's waits, or None in a single process. Collective: every rank calls it."""
    try:
        import torch.distributed as dist
    except ImportError:
        return None
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    try:  # gloo waits on the CPU whatever the training backend (NCCL...), with our own timeout
        return dist.new_group(backend="gloo", timeout=END_WAIT)
    except (RuntimeError, ValueError) as e:  # no gloo in this build: the default group and its timeout
        logger.debug("hubckpt: no gloo group for the callback's waits (%s); using the default group", e)
        return dist.group.WORLD


def _wait_for_every_process(group: Any) -> None:
    if group is not None:
        import torch.distributed as dist

        dist.barrier(group=group)


class HubckptCallback(TrainerCallback):
    """Publish Trainer checkpoints as Hub revisions. Keyword arguments go to `hubckpt.Publisher`."""

    def __init__(self, repo_id: str, *, replace_on_resume: bool = True, **publisher_kwargs: Any) -> None:
        from ..extras import require

        require("accelerate", extra="trainer", feature="the transformers Trainer (HubckptCallback)")
        self.repo_id = repo_id
        self.replace_on_resume = replace_on_resume
        self.publisher_kwargs = publisher_kwargs
        self._publisher: Publisher | None = None
        self._published_steps: set[int] = set()
        self._resumed = False
        self._group: Any = None  # set in on_train_begin when several processes train
        self._group_ready = False

    def _pub(self) -> Publisher:
        if self._publisher is None:
            self._publisher = Publisher(self.repo_id, **self.publisher_kwargs)
        return self._publisher

    def on_train_begin(self, args, state, control, **kwargs):
        self._resumed = state.global_step > 0  # resume_from_checkpoint: the Trainer starts past step 0
        if not self._group_ready:  # every process runs on_train_begin: creating the group is collective
            self._group, self._group_ready = _wait_group(), True
        return control

    def on_save(self, args, state, control, **kwargs):
        # Every process wrote its share of checkpoint-N/ (rng_state_<rank>.pth) before process zero reads it.
        _wait_for_every_process(self._group)
        if not state.is_world_process_zero:
            return control
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir() and state.global_step not in self._published_steps:
            log_history_file(folder)  # so that `hubckpt pull --trainer-checkpoint` gives the Trainer all it reads
            publisher = self._pub()  # a Publisher that cannot start (bad hub, spool in use) stops here
            try:  # an earlier job's failure, reported here once (publish() does not raise it)
                publisher.raise_if_failed()
            except Exception as e:  # noqa: BLE001 - logged, kept in the journal; training goes on
                logger.error(
                    "hubckpt: publishing an earlier checkpoint failed: %s (see `hubckpt jobs %s`)", e, self.repo_id
                )
            try:
                publisher.publish(
                    folder,
                    step=state.global_step,
                    final=state.global_step >= state.max_steps > 0,
                    snapshot=True,
                    replace=self._resumed and self.replace_on_resume,
                )
            except Exception as e:  # noqa: BLE001 - logged, kept in the journal; training goes on
                logger.error(
                    "hubckpt: could not publish checkpoint-%d: %s (see `hubckpt jobs %s`)",
                    state.global_step,
                    e,
                    self.repo_id,
                )
            else:
                self._published_steps.add(state.global_step)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        try:
            if state.is_world_process_zero and self._publisher is not None:
                self._finish(state)
        finally:  # the other processes return from train() once everything is published
            _wait_for_every_process(self._group)
        return control

    def _finish(self, state) -> None:
        if state.global_step not in self._published_steps:
            logger.warning(
                "the Trainer did not save at the last step (%d); the final model is not published as "
                "a revision. Set save_strategy so that the last step is saved.",
                state.global_step,
            )
        publisher, self._publisher = self._publisher, None
        if publisher is None:
            return
        try:
            publisher.close()
        except Exception as e:  # noqa: BLE001 - training is done; what failed stays in the journal, listed by `hubckpt jobs`
            logger.error("hubckpt: publishing failed: %s (see `hubckpt jobs %s`)", e, self.repo_id)

    def __getstate__(self) -> dict:
        # Trainer state may be pickled (e.g. by hyperparameter search); the live publisher is not.
        state = dict(self.__dict__)
        state["_publisher"] = None
        state["_group"], state["_group_ready"] = None, False
        return state
