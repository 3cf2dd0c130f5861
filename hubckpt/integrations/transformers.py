"""`HubckptCallback`: publish every checkpoint a transformers `Trainer` saves, without blocking training.

    from hubckpt.integrations.transformers import HubckptCallback
    trainer = Trainer(..., callbacks=[HubckptCallback("me/exp1", keep_last=5)])
    trainer.train()   # each checkpoint-N/ becomes revision step-000000N; the last one is `final`

On every save the checkpoint folder is hard-linked into the publisher's spool (so
`save_total_limit` may delete it right away) and queued; conversion, upload and indexing happen in
the background. At the end of training the last checkpoint is marked final (saved first if the
Trainer did not save at the last step) and the callback waits for every upload. Only the main
process (rank 0) publishes. The Trainer's `log_history` is written beside each checkpoint as
`log_history.json`, so a pulled revision gives `resume_from_checkpoint` all it reads (`trainer_resume`).

A publish failure never stops training: it is logged, and the job stays in the spool's journal
(`hubckpt jobs REPO` lists it, `--retry` / `--drop` settle it). After `resume_from_checkpoint`, the
Trainer saves again the steps after the one it resumed from; those revisions are replaced by the
resumed run's checkpoints (`replace_on_resume=False` raises `RevisionCollisionError` instead, logged).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ..publishing import Publisher
from .trainer_resume import log_history_file

logger = logging.getLogger(__name__)


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

    def _pub(self) -> Publisher:
        if self._publisher is None:
            self._publisher = Publisher(self.repo_id, **self.publisher_kwargs)
        return self._publisher

    def on_train_begin(self, args, state, control, **kwargs):
        self._resumed = state.global_step > 0  # resume_from_checkpoint: the Trainer starts past step 0
        return control

    def on_save(self, args, state, control, **kwargs):
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
        if not state.is_world_process_zero or self._publisher is None:
            return control
        if state.global_step not in self._published_steps:
            logger.warning(
                "the Trainer did not save at the last step (%d); the final model is not published as "
                "a revision. Set save_strategy so that the last step is saved.",
                state.global_step,
            )
        publisher, self._publisher = self._publisher, None
        try:
            publisher.close()
        except Exception as e:  # noqa: BLE001 - training is done; what failed stays in the journal, listed by `hubckpt jobs`
            logger.error("hubckpt: publishing failed: %s (see `hubckpt jobs %s`)", e, self.repo_id)
        return control

    def __getstate__(self) -> dict:
        # Trainer state may be pickled (e.g. by hyperparameter search); the live publisher is not.
        state = dict(self.__dict__)
        state["_publisher"] = None
        return state
