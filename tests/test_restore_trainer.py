"""A Trainer run resumed from a published revision (`pull --trainer-checkpoint`) ends bit-identical."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("accelerate")
ROOT = Path(__file__).resolve().parents[1]
STOP_AT, MAX_STEPS = 4, 8  # 3 steps per epoch: interrupted mid-epoch 2, finishing in epoch 3


def _trainer(output_dir: Path, init_seed: int, callbacks=(), save: bool = False):
    import transformers
    from transformers import GPT2LMHeadModel, Trainer, TrainingArguments

    from tests.factories import tiny_gpt2_config

    transformers.logging.set_verbosity_error()
    torch.manual_seed(init_seed)
    model = GPT2LMHeadModel(tiny_gpt2_config())  # dropout 0.1 everywhere (the config's defaults)
    assert model.config.resid_pdrop > 0
    gen = torch.Generator().manual_seed(0)
    data = [
        {"input_ids": torch.randint(0, 32, (8,), generator=gen), "labels": torch.randint(0, 32, (8,), generator=gen)}
        for _ in range(12)
    ]
    args = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=MAX_STEPS,
        per_device_train_batch_size=4,
        save_strategy="steps" if save else "no",
        save_steps=STOP_AT,
        report_to=[],
        use_cpu=True,
        logging_steps=1,
        disable_tqdm=True,
        seed=0,
        learning_rate=1e-2,
        warmup_steps=2,
    )
    return Trainer(model=model, args=args, train_dataset=data, callbacks=list(callbacks))


def resume_in_fresh_process(work: str) -> None:
    """Subprocess: resume from the pulled Trainer checkpoint with another init, save the final weights."""
    torch.set_num_threads(1)
    folder = Path(work) / "pulled"
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):  # plain files: no allowlist needed
        torch.load(folder / name, weights_only=True)
    trainer = _trainer(Path(work) / "out", init_seed=1)
    trainer.train(resume_from_checkpoint=str(folder))
    torch.save(trainer.model.state_dict(), Path(work) / "final.pt")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_trainer_resumed_from_the_hub_is_bit_exact(local_hub, api, tmp_path):
    from transformers import TrainerCallback

    from hubckpt.integrations.transformers import HubckptCallback

    class StopAt(TrainerCallback):  # an interruption, not a smaller max_steps (which changes the LR schedule)
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == STOP_AT:
                control.should_training_stop = True
            return control

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        straight = _trainer(tmp_path / "straight", init_seed=0)
        straight.train()
        reference = {k: v.clone() for k, v in straight.model.state_dict().items()}

        repo_id = "alice/trainer-exact-resume"
        interrupted = _trainer(
            tmp_path / "interrupted",
            init_seed=0,
            save=True,
            callbacks=[HubckptCallback(repo_id, hub=local_hub.url, spool_dir=tmp_path / "spool"), StopAt()],
        )
        interrupted.train()
        assert interrupted.state.global_step == STOP_AT
    finally:
        torch.set_num_threads(before)
    files = api.list_repo_files(repo_id, revision=f"step-{STOP_AT:07d}")
    assert {"log_history.json", "training_state/optimizer.safetensors", "training_state/rng.json"} <= set(files)

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    pull = subprocess.run(
        [
            sys.executable,
            "-m",
            "hubckpt",
            "pull",
            f"{repo_id}@step-{STOP_AT:07d}",
            str(tmp_path / "pulled"),
            "--trainer-checkpoint",
            "--hub",
            local_hub.url,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert pull.returncode == 0, pull.stderr[-3000:]
    assert "resume_from_checkpoint=" in pull.stdout
    assert pull.stdout.index("Pulled ") < pull.stdout.index("Wrote a Trainer checkpoint")  # what, then what of it
    code = f"from tests.test_restore_trainer import resume_in_fresh_process as r; r({str(tmp_path)!r})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = torch.load(tmp_path / "final.pt", weights_only=True)
    assert final.keys() == reference.keys()
    for k in reference:
        assert torch.equal(final[k], reference[k]), k
    state = json.loads((tmp_path / "pulled" / "trainer_state.json").read_text())
    assert state["global_step"] == STOP_AT and [e["step"] for e in state["log_history"]] == [1, 2, 3, 4]
