"""`hubckpt demo`: the whole product in one offline command.

For now: start the local hub, create a repo, train a tiny GPT-2 (built from config, no download)
for a few steps, publish two checkpoints as branches, list them, and load one back with plain
transformers.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

import typer


def demo(
    repo_id: str = typer.Option("local/hubckpt-demo", "--repo", help="Repo to (re)create for the demo."),
    hub: Optional[str] = typer.Option(None, "--hub", help="local (default), hf, or a URL."),
    root: Optional[Path] = typer.Option(None, "--root", help="Data folder of the local hub."),
    steps: int = typer.Option(40, "--steps", help="Training steps; a checkpoint is published at the middle and the end."),
) -> None:
    """Train a tiny model, publish two checkpoints as Hub branches, list and load them."""
    import torch
    from huggingface_hub.errors import RepositoryNotFoundError

    from ..commits import commit_folder
    from ..hubs import hub_api, point_hf_clients_at, resolve_hub

    if steps < 2:
        raise typer.BadParameter("needs at least 2 steps", param_hint="--steps")
    resolved = resolve_hub(hub, root=root)
    typer.echo(f"Using {resolved.describe()}")
    api = hub_api(resolved)
    point_hf_clients_at(resolved.endpoint)  # so plain transformers.from_pretrained talks to this hub too

    try:
        api.delete_repo(repo_id)
    except RepositoryNotFoundError:
        pass
    api.create_repo(repo_id)
    typer.echo(f"Created repo {repo_id}")

    import transformers
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    transformers.logging.set_verbosity_error()  # the demo's own lines are the story; keep library chatter out
    transformers.logging.disable_progress_bar()

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=128, n_positions=32, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    data = torch.randint(0, config.vocab_size, (64, 16), generator=torch.Generator().manual_seed(0))
    publish_at = {steps // 2, steps}
    published: list[str] = []
    previous = "main"
    for step in range(1, steps + 1):
        batch = data[(step * 8) % 64:(step * 8) % 64 + 8]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step in publish_at:
            branch = f"step-{step:07d}"
            with tempfile.TemporaryDirectory() as tmp:
                model.save_pretrained(tmp)
                api.create_branch(repo_id, branch=branch, revision=previous)
                info = commit_folder(api, repo_id, tmp, revision=branch,
                                     commit_message=f"Checkpoint at step {step} (loss {loss.item():.4f})")
            typer.echo(f"Published step {step:>4}  loss {loss.item():.4f}  -> branch {branch} ({info.oid[:8]})")
            published.append(branch)
            previous = branch

    refs = api.list_repo_refs(repo_id)
    typer.echo(f"\nBranches of {repo_id}:")
    for ref in sorted(refs.branches, key=lambda r: r.name):
        title = api.list_repo_commits(repo_id, revision=ref.name)[0].title
        typer.echo(f"  {ref.name:<16} {ref.target_commit[:8]}  {title}")

    loaded = AutoModelForCausalLM.from_pretrained(repo_id, revision=published[-1])
    expected = model.state_dict()
    same = all(torch.equal(t, expected[k]) for k, t in loaded.state_dict().items())
    typer.echo(f"\nLoaded {repo_id}@{published[-1]} with transformers.AutoModelForCausalLM: "
               f"{'weights identical to the trained model' if same else 'WEIGHTS DIFFER'}")
    typer.echo(f"Try it yourself:\n  HF_ENDPOINT={resolved.endpoint} python -c \"from transformers import AutoModelForCausalLM; "
               f"AutoModelForCausalLM.from_pretrained('{repo_id}', revision='{published[0]}')\"")
    if not same:
        raise typer.Exit(1)
