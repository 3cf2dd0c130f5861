"""Real checkpoints, written the way each framework writes them, into tmp_path (tiny, seeded, no downloads)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def tiny_gpt2_config(**overrides):
    from transformers import GPT2Config

    kwargs = dict(n_layer=1, n_head=2, n_embd=16, vocab_size=32, n_positions=8, bos_token_id=0, eos_token_id=0)
    kwargs.update(overrides)
    return GPT2Config(**kwargs)


def make_trainer_run(out: Path, max_steps: int = 4, save_steps: int = 2) -> Path:
    """A real transformers Trainer run folder with checkpoint-N/ folders (optimizer, scheduler, rng, state)."""
    import transformers
    from transformers import GPT2LMHeadModel, Trainer, TrainingArguments

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    model = GPT2LMHeadModel(tiny_gpt2_config())
    gen = torch.Generator().manual_seed(0)
    data = [
        {"input_ids": torch.randint(0, 32, (8,), generator=gen), "labels": torch.randint(0, 32, (8,), generator=gen)}
        for _ in range(16)
    ]
    args = TrainingArguments(
        output_dir=str(out),
        max_steps=max_steps,
        save_steps=save_steps,
        per_device_train_batch_size=4,
        report_to=[],
        use_cpu=True,
        logging_steps=1,
        eval_strategy="steps",
        eval_steps=save_steps,
        metric_for_best_model="eval_loss",
        save_strategy="steps",
        disable_tqdm=True,
        seed=0,
    )
    Trainer(model=model, args=args, train_dataset=data, eval_dataset=data[:4]).train()
    return out


class TinyLM(nn.Module):
    """nanoGPT-shaped: token embedding tied to the output head."""

    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(32, 8)
        self.block = nn.Linear(8, 8)
        self.lm_head = nn.Linear(8, 32, bias=False)
        self.lm_head.weight = self.wte.weight


def make_nanogpt_file(path: Path, compiled: bool = True) -> tuple[Path, TinyLM, torch.optim.Optimizer]:
    torch.manual_seed(1)
    model = TinyLM()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = model.lm_head(model.block(model.wte(torch.tensor([1, 2, 3])))).sum()
    loss.backward()
    optimizer.step()
    state = model.state_dict()
    if compiled:
        state = {f"_orig_mod.{k}": v for k, v in state.items()}
    torch.save(
        {
            "model": state,
            "optimizer": optimizer.state_dict(),
            "model_args": {"n_embd": 8, "vocab_size": 32},
            "iter_num": 1500,
            "best_val_loss": 2.5,
            "config": {"lr": 1e-3, "dataset": "toy"},
        },
        path,
    )
    return path, model, optimizer


def all_dtypes_state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(2)
    base = torch.randn(4, 6)
    return {
        "f32": base,
        "f64": base.double(),
        "f16": base.half(),
        "bf16": base.bfloat16(),
        "f8_e4m3": base.to(torch.float8_e4m3fn),
        "f8_e5m2": base.to(torch.float8_e5m2),
        "i8": torch.randint(-128, 127, (5,), dtype=torch.int8),
        "u8": torch.randint(0, 255, (5,), dtype=torch.uint8),
        "i16": torch.randint(-1000, 1000, (3,), dtype=torch.int16),
        "i32": torch.randint(-(10**6), 10**6, (3,), dtype=torch.int32),
        "i64": torch.arange(7, dtype=torch.int64),
        "bool": torch.tensor([True, False, True]),
        "nan_inf": torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0]),
        "transposed": base.t(),  # non-contiguous
        "empty": torch.zeros(0, 3),
        "scalar": torch.tensor(3.5),
    }


def make_lightning_ckpt(path: Path) -> Path:
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1)
    net(torch.randn(2, 4)).sum().backward()
    opt.step()
    sched.step()
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in net.state_dict().items()},
            "optimizer_states": [opt.state_dict()],
            "lr_schedulers": [sched.state_dict()],
            "epoch": 3,
            "global_step": 120,
            "pytorch-lightning_version": "2.5.0",
            "hyper_parameters": {"lr": 0.1},
        },
        path,
    )
    return path


def make_dcp_folder(path: Path) -> Path:
    import torch.distributed.checkpoint as dcp

    torch.manual_seed(4)
    net = nn.Linear(4, 3)
    dcp.save({"model": net.state_dict(), "step": 77}, checkpoint_id=str(path), no_dist=True)
    return path
