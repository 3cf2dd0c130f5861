"""`hubckpt demo`: the whole product in one offline command.

Trains a tiny GPT-2 (built from config, no download) on CPU for a few hundred steps, publishes a
checkpoint every N steps to the local hub as its own revision (branch, card, index, best/final tags)
without blocking training, prints the `ls` table, loads one revision back with plain transformers, then
shows the consumer side from Python: list the revisions, load `best` and an early step, read one tensor lazily.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import typer


def demo(
    repo_id: str = typer.Option("local/hubckpt-demo", "--repo", help="Repo to (re)create for the demo."),
    hub: str | None = typer.Option(None, "--hub", help="local (default), hf, or a URL."),
    root: Path | None = typer.Option(None, "--root", help="Data folder of the local hub."),
    steps: int = typer.Option(400, "--steps", help="Training steps."),
    every: int = typer.Option(50, "--every", help="Publish a checkpoint every N steps."),
    keep_last: int | None = typer.Option(None, "--keep-last", help="Retention: keep only the last K revisions."),
) -> None:
    """Train a tiny model, publish its checkpoints as Hub revisions while it trains, list them, load one."""
    import torch
    from huggingface_hub.errors import RepositoryNotFoundError

    from ..hub.select import hub_api, point_hf_clients_at, resolve_hub
    from ..publishing import Publisher
    from .revisions import ls

    if steps < 2 or every < 1 or every > steps:
        raise typer.BadParameter("need steps >= 2 and 1 <= every <= steps")
    resolved = resolve_hub(hub, root=root, start=True)
    typer.echo(f"Using {resolved.describe()}")
    api = hub_api(resolved)
    point_hf_clients_at(resolved.endpoint)  # so plain transformers.from_pretrained talks to this hub too
    try:
        api.delete_repo(repo_id)
    except RepositoryNotFoundError:
        pass

    import transformers
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    transformers.logging.set_verbosity_error()  # the demo's own lines are the story
    transformers.logging.disable_progress_bar()
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=64, vocab_size=256, n_positions=64, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    # A learnable toy language: each token is the previous one plus 1 (mod the vocabulary).
    starts = torch.randint(0, config.vocab_size, (512, 1), generator=torch.Generator().manual_seed(0))
    data = (starts + torch.arange(32)) % config.vocab_size
    held_out = (
        torch.randint(0, config.vocab_size, (32, 1), generator=torch.Generator().manual_seed(1)) + torch.arange(32)
    ) % config.vocab_size

    companions = Path(tempfile.mkdtemp(prefix="hubckpt-demo-"))
    model.config.architectures = [type(model).__name__]  # as model.save_pretrained records it
    model.config.save_pretrained(companions)
    model.generation_config.save_pretrained(companions)
    tokenizer_files = _save_byte_tokenizer(companions)  # so `hubckpt analyze --probe probe.txt` works on the demo
    spool = companions / "spool"
    typer.echo(
        f"Training a {sum(p.numel() for p in model.parameters()):,}-parameter GPT-2 for {steps} steps; "
        f"publishing every {every} steps to {repo_id}"
    )
    blocked = 0.0
    started = time.perf_counter()
    with Publisher(
        repo_id, hub=resolved, spool_dir=spool, monitor="eval_loss", mode="min", keep_last=keep_last, max_pending=2
    ) as publisher:
        for step in range(1, steps + 1):
            batch = data[(step * 16) % 512 : (step * 16) % 512 + 16]
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            if step % every == 0 or step == steps:
                model.eval()  # no dropout while measuring
                with torch.no_grad():
                    eval_loss = model(input_ids=held_out, labels=held_out).loss.item()
                model.train()
                t0 = time.perf_counter()
                publisher.publish(
                    state_dict=model.state_dict(),
                    step=step,
                    final=step == steps,
                    metrics={"loss": loss.item(), "eval_loss": eval_loss},
                    training_state={
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "loop": {"step": step},
                    },
                    companions=[companions / "config.json", companions / "generation_config.json", *tokenizer_files],
                )
                blocked += time.perf_counter() - t0
                typer.echo(
                    f"  step {step:>4}  loss {loss.item():.4f}  eval_loss {eval_loss:.4f}  -> queued for publishing"
                )
        train_time = time.perf_counter() - started
        typer.echo(
            f"Training done in {train_time:.1f}s (publishing blocked it for {blocked:.2f}s in total); "
            "waiting for the last uploads..."
        )
    typer.echo("")
    ls(repo_id, hub=resolved.endpoint, root=None, token=None, as_json=False, all_=False, refresh=False)

    index, _ = publisher.targets[0].read_index()
    pick = index.best or index.live()[-1].name
    loaded = AutoModelForCausalLM.from_pretrained(repo_id, revision=pick)
    with torch.no_grad():
        reloaded_loss = loaded(input_ids=held_out, labels=held_out).loss.item()
    picked = index.get(pick)
    assert picked is not None, "the demo's index lists the revisions it names"
    expected = picked.metrics["eval_loss"]
    verdict = "same as at publish time" if abs(reloaded_loss - expected) < 1e-5 else f"EXPECTED {expected:.4f}"
    how_picked = "tag `best`" if index.best else "the latest; no revision is tagged `best`"
    typer.echo(
        f"\nLoaded {repo_id}@{pick} ({how_picked}) with plain transformers.AutoModelForCausalLM: "
        f"eval_loss {reloaded_loss:.4f}, {verdict}"
    )
    if verdict != "same as at publish time":
        raise typer.Exit(1)
    _consume(repo_id, resolved, held_out)
    typer.echo(
        f"Browse it: hubckpt ls {repo_id}   |   hubckpt show {repo_id}@best   |   "
        f"hubckpt diff {repo_id}@{index.live()[0].name} {repo_id}@best"
    )


def _save_byte_tokenizer(folder: Path) -> list[Path]:
    """A byte-level tokenizer (token id = byte value) for the demo's 256-token vocabulary, built offline.

    Without one a published revision cannot tokenise a text probe, so `hubckpt analyze` refused the demo repo.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # GPT-2's printable stand-in for each byte, which the ByteLevel pre-tokenizer emits.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    char = {b: chr(b) for b in printable} | {b: chr(256 + i) for i, b in enumerate(others)}
    tokenizer = Tokenizer(models.BPE(vocab={c: b for b, c in char.items()}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=char[0], pad_token=char[0]).save_pretrained(folder)
    return sorted(p for p in folder.iterdir() if p.name.startswith(("tokenizer", "special_tokens")))


def _consume(repo_id: str, hub, held_out) -> None:
    """The consumer side from Python: list, load by word and by step, read one tensor lazily."""
    import torch

    import hubckpt

    from ..cards import human_size

    revisions = hubckpt.list_revisions(repo_id, hub=hub)
    typer.echo(
        f"\nFrom Python: hubckpt.list_revisions({repo_id!r}) -> {len(revisions)} revisions, steps "
        f"{revisions[0].step}..{revisions[-1].step}, best = "
        f"{next((r.name for r in revisions if 'best' in r.tags), '-')}"
    )
    loaded = set()
    for revision, step in (("best", None), (None, revisions[0].step)):
        model = hubckpt.load_model(repo_id, revision, step=step, hub=hub)
        info = model.hubckpt_revision
        loaded.add(info.commit)
        with torch.no_grad():
            loss = model(input_ids=held_out, labels=held_out).loss.item()
        how = f'"{revision}"' if revision else f"step={step}"
        typer.echo(
            f"  hubckpt.load_model(..., {how}) -> {type(model).__name__} at {info.name} "
            f"(commit {info.commit[:12]}): eval_loss {loss:.4f} (published: {info.metrics['eval_loss']:.4f})"
        )
    middle = not_downloaded(revisions, loaded)
    with hubckpt.open_revision(repo_id, step=middle.step, hub=hub) as rev:
        name = "transformer.h.0.attn.c_attn.weight"
        tensor = rev.get_tensor(name)
        typer.echo(
            f"  hubckpt.open_revision(..., step={middle.step}).get_tensor({name!r}) -> {tuple(tensor.shape)} "
            f"{str(tensor.dtype).replace('torch.', '')} ({human_size(tensor.numel() * tensor.element_size())}): "
            f"{rev.bytes_received:,} bytes moved in {rev.requests} requests (the index, checkpoint.json, the "
            f"safetensors header in one or two reads, the tensor's byte range) of a "
            f"{human_size(rev.info.size)} revision"
        )


def not_downloaded(revisions: list, loaded: set[str]):
    """The middle revision among those whose commit was not loaded above: its lazy read goes over HTTP, so
    the bytes the demo reports are what a remote read moves (a cached, verified copy is read from disk)."""
    remote = [r for r in revisions if r.commit not in loaded] or revisions
    return remote[len(remote) // 2]
