"""Analysis across published revisions on the real local hub: `analyze`, the CLI, lazy weight drift."""

from __future__ import annotations

import json
import math
import uuid

import numpy as np
import pytest
import torch

from hubckpt.analysis import activations as act
from hubckpt.analysis.similarity import linear_cka
from hubckpt.errors import AnalysisError

from .factories import tiny_gpt2_config
from .helpers import run_cli
from .test_analysis import word_tokenizer

WORDS = "the a cat dog bird sat ran on under mat log tree".split()
STEPS = [0, 5, 10, 15]


def _models():
    """Four 'revisions' of one training run (seeded), and their state dicts."""
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(tiny_gpt2_config(n_layer=2, n_embd=32, vocab_size=len(WORDS) + 2, n_positions=16))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    states = {}
    for step in range(STEPS[-1] + 1):
        if step:
            batch = torch.randint(2, len(WORDS) + 2, (8, 6), generator=gen)
            model(input_ids=batch, labels=batch).loss.backward()
            opt.step()
            opt.zero_grad()
        if step in STEPS:
            states[step] = {k: v.clone() for k, v in model.state_dict().items()}
    return model.config, states


@pytest.fixture(scope="module")
def published(local_hub, tmp_path_factory):
    """A repo with 4 revisions (+ tokenizer) and one without a tokenizer, whose 2 revisions are identical."""
    from hubckpt import Publisher

    tmp = tmp_path_factory.mktemp("analysis-hub")
    config, states = _models()
    config.architectures = ["GPT2LMHeadModel"]  # what model.save_pretrained records: load_model picks the class
    files = tmp / "files"
    config.save_pretrained(files)
    word_tokenizer(WORDS).save_pretrained(files)
    repo = f"alice/analysis-{uuid.uuid4().hex[:6]}"
    companions = [files / "config.json", files / "tokenizer.json", files / "tokenizer_config.json"]
    with Publisher(repo, hub=local_hub.url, spool_dir=tmp / "spool", monitor="loss") as pub:
        for step in STEPS:
            pub.publish(
                state_dict=states[step],
                step=step,
                metrics={"loss": 5.0 - step / 10},
                companions=companions,
                final=step == STEPS[-1],
            )
    bare = f"alice/analysis-bare-{uuid.uuid4().hex[:6]}"
    with Publisher(bare, hub=local_hub.url, spool_dir=tmp / "spool2") as pub:
        for step in (1, 2):  # the same weights twice
            pub.publish(state_dict=states[0], step=step, companions=[files / "config.json"])
    return {"repo": repo, "bare": bare, "config": config, "states": states, "tmp": tmp, "hub": local_hub.url}


def _expected_cka(published, probe: act.Probe, layer: str) -> np.ndarray:
    from transformers import GPT2LMHeadModel

    reps = []
    for step in STEPS:
        model = GPT2LMHeadModel(published["config"])
        model.load_state_dict(published["states"][step])
        reps.append(act.collect_activations(model, probe, [layer])[layer])
    return np.array([[linear_cka(a, b) for b in reps] for a in reps])


@pytest.mark.slow
def test_analyze_cli_with_a_text_probe_writes_results_and_plots(published, tmp_path):
    probe_file = tmp_path / "probe.txt"
    lines = [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(3 + i % 4)) for i in range(24)]
    probe_file.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    r = run_cli(
        "analyze",
        published["repo"],
        "--probe",
        str(probe_file),
        "--out",
        str(out),
        "--hub",
        published["hub"],
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "Analysed 4 revisions x 2 layers" in r.stdout
    res = json.loads((out / "results.json").read_text())
    assert list(res) == ["revisions", "steps", "layers", "cka", "drift"]
    assert res["revisions"] == [f"step-{s:07d}" for s in STEPS] and res["steps"] == STEPS
    assert res["layers"] == ["transformer.h.0", "transformer.h.1"]
    # the values are those of the published weights over the same tokenised probe
    probe = act.Probe.from_texts(lines, word_tokenizer(WORDS))
    for layer in res["layers"]:
        m = np.array(res["cka"][layer])
        np.testing.assert_allclose(m, _expected_cka(published, probe, layer), atol=1e-5)
        assert np.allclose(np.diag(m), 1.0) and np.allclose(m, m.T) and m[0, -1] < 0.999
    # drift per layer from the first revision: 0 there, then what the state dicts say
    drift = res["drift"]
    first, last = published["states"][0], published["states"][STEPS[-1]]
    keys = [k for k in first if k.startswith("transformer.h.1.") and first[k].is_floating_point()]
    num = math.sqrt(sum(float((last[k] - first[k]).double().norm()) ** 2 for k in keys))
    den = math.sqrt(sum(float(first[k].double().norm()) ** 2 for k in keys))
    assert drift["transformer.h.1"][0] == 0.0
    assert drift["transformer.h.1"][-1] == pytest.approx(num / den, rel=1e-6)
    assert "lm_head" not in drift  # tied to wte: one series, not two
    for png in ("cka.png", "drift.png", "metrics.png", "layers.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (out / "activations").iterdir()) == [f"step-{s:07d}.safetensors" for s in STEPS]


@pytest.mark.slow
def test_analyze_safetensors_probe_chosen_revisions_and_layers_and_resume(published, tmp_path):
    from safetensors.torch import save_file

    from hubckpt.analysis import analyze

    ids = torch.randint(2, len(WORDS) + 2, (12, 5), generator=torch.Generator().manual_seed(3))
    save_file({"input_ids": ids}, str(tmp_path / "probe.safetensors"))
    out = tmp_path / "out"
    names = ["step-0000015", "step-0000000"]
    result = analyze(
        published["repo"],
        probe=tmp_path / "probe.safetensors",
        out=out,
        revisions=names,
        layers=["-1"],
        hub=published["hub"],
    )
    res = result.results
    assert res["revisions"] == ["step-0000000", "step-0000015"] and res["layers"] == ["transformer.h.1"]
    probe = act.Probe(input_ids=ids)
    full = _expected_cka(published, probe, "transformer.h.1")
    assert res["cka"]["transformer.h.1"][0][1] == pytest.approx(full[0, -1], abs=1e-5)
    stored = (out / "activations" / "step-0000000.safetensors").stat().st_mtime_ns
    again = analyze(
        published["repo"],
        probe=tmp_path / "probe.safetensors",
        out=out,
        revisions=names,
        layers=["-1"],
        hub=published["hub"],
        plots=False,
    )
    assert (out / "activations" / "step-0000000.safetensors").stat().st_mtime_ns == stored  # reused
    assert again.results == res
    # the lower-level API stores the same activations (revisions named, resolved, loaded at their commits)
    from hubckpt.analysis import ActivationStore, collect_across_revisions

    store = ActivationStore(tmp_path / "api")
    assert collect_across_revisions(published["repo"], names, probe, store, layers=[-1], hub=published["hub"]) == names
    assert store.metadata("step-0000015")["step"] == 15 and store.names() == ["step-0000000", "step-0000015"]
    torch.testing.assert_close(
        store.load("step-0000015", "transformer.h.1"),
        ActivationStore(out / "activations").load("step-0000015", "transformer.h.1"),
    )
    every = analyze(
        published["repo"],
        probe=probe,
        out=tmp_path / "every",
        every=10,
        layers=[0],
        hub=published["hub"],
        plots=False,
        cache="previous",
    )
    assert every.results["steps"] == [0, 10]  # steps that are multiples of 10, as iter_revisions(every=10)
    with pytest.raises(AnalysisError, match=r"multiple of 5 \(steps: 1, 2\)"):
        analyze(published["bare"], probe=probe, out=tmp_path / "none", every=5, hub=published["hub"])


@pytest.mark.slow
def test_drift_is_zero_for_identical_revisions_and_text_probe_without_tokenizer_is_a_clear_error(
    published, tmp_path, capsys
):
    from hubckpt.analysis import analyze

    ids = torch.randint(2, 10, (6, 4), generator=torch.Generator().manual_seed(4))
    res = analyze(published["bare"], probe=ids, out=tmp_path / "bare", hub=published["hub"], plots=False).results
    assert res["steps"] == [1, 2]
    assert all(v == [0.0, 0.0] for v in res["drift"].values())
    assert all(np.allclose(m, 1.0) for m in res["cka"].values())
    probe_file = tmp_path / "probe.txt"
    probe_file.write_text("the cat sat\n")
    with pytest.raises(AnalysisError, match="no tokenizer"):
        analyze(published["bare"], probe=probe_file, out=tmp_path / "x", hub=published["hub"])
    assert (
        _cli(
            capsys,
            "analyze",
            published["bare"],
            "--probe",
            str(probe_file),
            "--out",
            str(tmp_path / "y"),
            "--hub",
            published["hub"],
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "no tokenizer files" in err and "Traceback" not in err
    assert (
        _cli(
            capsys,
            "analyze",
            published["bare"],
            "--probe",
            str(probe_file),
            "--out",
            str(tmp_path / "y"),
            "--hub",
            published["hub"],
            "--every",
            "2",
            "--revisions",
            "a",
        )
        == 1
    )
    assert "not both" in capsys.readouterr().err


def _cli(capsys, *argv: str) -> int:
    """The CLI in this process (its error boundary included): exit code."""
    from hubckpt.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    return exit_.value.code


@pytest.mark.slow
def test_weight_drift_reads_only_the_selected_tensors(published, local_hub):
    from hubckpt import Publisher, list_revisions
    from hubckpt.analysis import weight_drift

    # a repo of its own, so that no earlier test has its files in the download cache already
    repo = f"alice/analysis-lazy-{uuid.uuid4().hex[:6]}"
    with Publisher(repo, hub=local_hub.url, spool_dir=published["tmp"] / "spool-lazy") as pub:
        for step in STEPS:
            pub.publish(state_dict=published["states"][step], step=step)
    name = "transformer.h.0.attn.c_attn.weight"
    res = weight_drift(repo, keys=[name], hub=local_hub.url)
    assert res.revisions == [f"step-{s:07d}" for s in STEPS] and res.reference == "step-0000000"
    first = published["states"][0][name]
    expected = [float((published["states"][s][name] - first).norm() / first.norm()) for s in STEPS]
    assert res.parameters[name] == pytest.approx(expected, rel=1e-5)
    assert res.parameters[name][0] == 0.0
    tensor_bytes = first.numel() * first.element_size()
    whole = sum(r.size for r in list_revisions(repo, hub=local_hub.url))
    # 4 reads of one tensor (the reference is not read twice) plus each revision's header and manifest:
    # within 64 KiB of the tensor per revision, and well under the whole checkpoints
    assert 4 * tensor_bytes <= res.bytes_received <= 4 * (tensor_bytes + 64 * 1024)
    assert res.bytes_received < whole / 3
