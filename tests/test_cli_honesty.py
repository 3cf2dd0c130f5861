"""What the CLI tells a new user: help texts, partial results, protected revisions, errors that name the cause."""

from __future__ import annotations

import re

import pytest


def _commands():
    """(path, click command) for every command and subcommand of `hubckpt`."""
    import typer.main

    from hubckpt.cli import app

    def walk(cmd, path):
        yield path, cmd
        if hasattr(cmd, "list_commands"):
            ctx = cmd.context_class(cmd, info_name=path[-1])
            for name in cmd.list_commands(ctx):
                yield from walk(cmd.get_command(ctx, name), [*path, name])

    return list(walk(typer.main.get_command(app), ["hubckpt"]))


def test_every_option_of_every_command_has_help_that_survives_rendering(capsys):
    """`--keep-*` had no help; `[default: ...]` in a help text was eaten as Rich markup, leaving "hub ."."""
    from rich.text import Text

    from hubckpt.cli import main

    missing, mangled = [], []
    for path, cmd in _commands():
        for param in cmd.params:
            if param.param_type_name != "option" or param.name == "help":
                continue
            text = getattr(param, "help", None) or ""
            if not text.strip():
                missing.append(f"{' '.join(path)} {param.opts[0]}")
            elif Text.from_markup(text).plain != text:
                mangled.append(f"{' '.join(path)} {param.opts[0]}: {text!r}")
        with pytest.raises(SystemExit) as exit_:
            main([*path[1:], "--help"])
        assert exit_.value.code == 0
        rendered = capsys.readouterr().out
        dangling = [line for line in rendered.splitlines() if re.search(r"\w \.(\s|│|$)", line)]
        assert not dangling, f"{' '.join(path)} --help: {dangling}"
    assert not missing, f"options without help: {missing}"
    assert not mangled, f"help texts Rich would render differently: {mangled}"


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    """The CLI in this process (its error boundary included): (exit code, stdout, stderr)."""
    from hubckpt.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


def test_publish_of_a_run_with_one_corrupt_checkpoint_publishes_the_others_and_says_which_failed(
    api, local_hub, tmp_path, capsys
):
    import torch

    run = tmp_path / "run"
    run.mkdir()
    for step in (10, 30):
        torch.save({"w": torch.full((4,), float(step))}, run / f"ckpt-{step}.pt")
    (run / "ckpt-20.pt").write_bytes(b"PK\x03\x04 not a checkpoint at all" * 10)
    repo_id = "alice/partial-run"
    code, out, err = _cli(
        capsys, "publish", str(run), "--repo", repo_id, "--hub", local_hub.url, "--spool", str(tmp_path / "spool")
    )
    assert code == 1, (out, err)
    branches = {b.name for b in api.list_repo_refs(repo_id).branches}
    assert branches == {"main", "step-0000010", "step-0000030"}
    assert re.search(r"published\s+step-0000010", out) and re.search(r"published\s+step-0000030", out), out
    failed = [line for line in err.splitlines() if "step 20" in line or "step-0000020" in line]
    assert failed and "ckpt-20.pt" in "\n".join(failed), err
    assert "Traceback" not in err
    assert "1 of 3" in err, err  # a summary: how many failed, and that the others were published
    assert not [line for line in err.splitlines() if line.startswith("Error:")], err  # said once, not again


def test_prune_never_deletes_a_revision_the_user_tagged_and_the_dry_run_says_why(api, local_hub, tmp_path, capsys):
    import torch

    from hubckpt.publishing import Publisher

    repo_id = "alice/prune-tagged"
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "spool", monitor="eval_loss") as pub:
        for step, loss in ((10, 1.0), (20, 2.0), (30, 3.0), (40, 4.0), (50, 5.0)):  # step 10 is best
            pub.publish(state_dict={"w": torch.full((2,), float(step))}, step=step, metrics={"eval_loss": loss})
    hub = ["--hub", local_hub.url]
    assert _cli(capsys, "tag", repo_id, "step-0000020", "paper-v1", *hub)[0] == 0
    api.create_tag(repo_id, tag="ablation", revision="step-0000030")  # a tag made with another client

    code, out, _ = _cli(capsys, "prune", repo_id, "--keep-last", "1", "--dry-run", *hub)
    assert code == 0
    assert "Would prune 1: step-0000040" in out, out
    assert re.search(r"step-0000010.*best", out) and re.search(r"step-0000020.*tag paper-v1", out), out
    assert re.search(r"step-0000030.*tag ablation", out), out
    assert {b.name for b in api.list_repo_refs(repo_id).branches} >= {"step-0000020", "step-0000040"}  # a dry run

    code, out, _ = _cli(capsys, "prune", repo_id, "--keep-last", "1", *hub)
    assert code == 0 and "Pruned 1: step-0000040" in out, out
    branches = {b.name for b in api.list_repo_refs(repo_id).branches}
    assert branches == {"main", "step-0000010", "step-0000020", "step-0000030", "step-0000050"}


def test_retention_while_publishing_keeps_a_tagged_revision(api, local_hub, tmp_path):
    import torch

    from hubckpt.publishing import Publisher

    repo_id = "alice/retain-tagged"
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "a") as pub:
        pub.publish(state_dict={"w": torch.zeros(2)}, step=1)
    api.create_tag(repo_id, tag="paper-v1", revision="step-0000001")
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "b", keep_last=1) as pub:
        for step in (2, 3):
            pub.publish(state_dict={"w": torch.full((2,), float(step))}, step=step)
    assert {b.name for b in api.list_repo_refs(repo_id).branches} == {"main", "step-0000001", "step-0000003"}


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_pickle_without_step_is_refused_by_name_and_called_dangerous(local_hub, tmp_path, capsys):
    import torch

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.ones(2)}, "x": _Evil(str(marker))}, evil)
    hub = ["--hub", local_hub.url, "--spool", str(tmp_path / "spool")]
    code, out, err = _cli(capsys, "publish", str(evil), "--repo", "alice/evil", *hub)
    assert code == 1
    assert "posix.system" in err and "os.system" in err, err  # the refused global, by both its names
    assert "--step" not in err, err  # not the step question: the refusal comes first
    assert "shell command" in err and "Do not allow" in err, err
    assert not marker.exists()
    code, out, err = _cli(capsys, "publish", str(evil), "--repo", "alice/evil", "--step", "5", *hub)
    assert code == 1 and "os.system" in err and "Do not allow" in err, err
    assert not marker.exists()


def test_pull_errors_use_command_line_syntax(api, local_hub, tmp_path, capsys):
    import torch

    from hubckpt.publishing import Publisher

    repo_id = "alice/pull-errors"
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "spool") as pub:
        for step in (10, 20):
            pub.publish(state_dict={"w": torch.full((2,), float(step))}, step=step)
    hub = ["--hub", local_hub.url]
    code, _, err = _cli(capsys, "pull", repo_id, str(tmp_path / "a"), "--step", "15", *hub)
    assert code == 1 and "--match nearest" in err and "match=" not in err, err
    dest = tmp_path / "full"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    code, _, err = _cli(capsys, "pull", f"{repo_id}@step-0000010", str(dest), *hub)
    assert code == 1 and "--force" in err, err
    assert (dest / "notes.txt").read_text() == "mine"


def test_load_state_dict_of_a_tied_output_head_gives_the_embedding(local_hub, tmp_path):
    """save_pretrained drops lm_head.weight of a tied GPT-2; asking for it said only KeyError."""
    import torch
    from transformers import GPT2LMHeadModel

    import hubckpt
    from hubckpt.publishing import Publisher

    from .factories import tiny_gpt2_config

    torch.manual_seed(0)
    model = GPT2LMHeadModel(tiny_gpt2_config())
    model.save_pretrained(tmp_path / "checkpoint-3")
    repo_id = "alice/tied-head"
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "spool") as pub:
        pub.publish(tmp_path / "checkpoint-3")
    got = hubckpt.load_state_dict(repo_id, "step-0000003", keys=["lm_head.weight"], hub=local_hub.url)
    assert list(got) == ["lm_head.weight"]
    assert torch.equal(got["lm_head.weight"], model.transformer.wte.weight.detach())
    with pytest.raises(KeyError, match="no tensor"):
        hubckpt.load_state_dict(repo_id, "step-0000003", keys=["no.such.weight"], hub=local_hub.url)


def test_ls_shows_metrics_to_six_digits_and_show_explains_its_size(local_hub, tmp_path, capsys):
    import torch

    from hubckpt.cards import human_size
    from hubckpt.publishing import Publisher

    repo_id = "alice/ls-digits"
    opt_state = {"optimizer": {"state": {0: {"exp_avg": torch.ones(64, 64)}}, "param_groups": [{"lr": 0.1}]}}
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "spool", monitor="eval_loss") as pub:
        for step, loss in ((1, 0.123459), (2, 0.123456)):  # equal to 4 digits; step 2 is best
            pub.publish(
                state_dict={"w": torch.full((8,), float(step))},
                training_state=opt_state,
                step=step,
                metrics={"eval_loss": loss},
            )
    code, out, _ = _cli(capsys, "ls", repo_id, "--hub", local_hub.url)
    assert code == 0
    assert "0.123459" in out and re.search(r"step-0000002 .*0\.123456 .*best", out), out
    code, out, _ = _cli(capsys, "ls", repo_id, "--hub", local_hub.url, "--json")
    size = {r["name"]: r["size"] for r in __import__("json").loads(out)["revisions"]}["step-0000002"]
    code, out, _ = _cli(capsys, "show", f"{repo_id}@step-0000002", "--hub", local_hub.url)
    assert code == 0
    assert f"{human_size(size)} of model files" in out and "hubckpt ls" in out, out
    assert "training_state/" in out


def test_cka_heatmaps_scale_to_the_data_and_write_the_values_in_the_cells():
    """On the demo every CKA value is > 0.99: on a fixed 0-1 scale the heatmaps were flat yellow squares."""
    import numpy as np

    from hubckpt.analysis import plots

    steps = ["100", "200", "300"]
    m = np.array([[1.0, 0.9991, 0.9962], [0.9991, 1.0, 0.9987], [0.9962, 0.9987, 1.0]])
    fig = plots.cka_figure({"transformer.h.0": m, "transformer.h.1": m**2}, steps, axis_label="step")
    ax = fig.axes[0]
    lo, hi = ax.images[0].get_clim()
    assert lo == pytest.approx((m**2).min()) and hi == pytest.approx(1.0)  # one scale, spanning the data
    cells = sorted(t.get_text() for t in ax.texts)
    assert cells == sorted(f"{v:.4f}" for v in m.ravel())  # enough decimals to tell 0.9991 from 0.9987
    assert ax.get_xlabel() == "step" and [t.get_text() for t in ax.get_xticklabels()] == steps
    fixed = plots.similarity_figure(m, ["a", "b", "c"], title="t", vmin=0.0, vmax=1.0, axis_label="layer")
    assert fixed.axes[0].images[0].get_clim() == (0.0, 1.0) and fixed.axes[0].get_ylabel() == "layer"
