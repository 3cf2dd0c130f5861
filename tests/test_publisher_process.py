"""The Checkpointer's publishing process: captures cross in shared memory, and survive the training process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from tests import environment as test_env
from tests.test_checkpointer import ROOT, make, train


def test_published_values_are_those_captured_even_if_the_model_changes_right_after(local_hub, api, tmp_path):
    from safetensors.torch import load_file

    import hubckpt

    model, optimizer, scheduler = make(seed=0)
    with hubckpt.Checkpointer(
        "alice/proc-values",
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        hub=local_hub.url,
        spool_dir=tmp_path / "spool",
        background="process",
    ) as ckpt:
        assert ckpt.background == "process" and ckpt.nice == "idle"
        assert os.sched_getscheduler(ckpt.publisher._process.pid) == os.SCHED_IDLE  # only CPU nothing else wants
        train(model, optimizer, scheduler, 0, 2)
        expected = {k: v.clone() for k, v in model.state_dict().items()}
        future = ckpt.save(2)
        with torch.no_grad():  # the training loop goes on writing into the live weights at once
            for p in model.parameters():
                p.add_(1.0)
        published = future.result(timeout=60)
    assert published.revision == "step-0000002" and not published.skipped
    weights = load_file(api.hf_hub_download("alice/proc-values", "model.safetensors", revision="step-0000002"))
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[k], expected[k]) for k in expected)
    state = json.loads(
        Path(api.hf_hub_download("alice/proc-values", "training_state/loop.json", revision="step-0000002")).read_text()
    )
    assert state["state"]["step"] == 2


def killed_after_save(repo_id: str, endpoint: str, spool: str) -> None:
    """Subprocess: saves step 3, then is SIGKILLed at once (before the publish can have finished)."""
    import hubckpt

    model, optimizer, scheduler = make(seed=0)
    ckpt = hubckpt.Checkpointer(
        repo_id,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        hub=endpoint,
        spool_dir=spool,
        background="process",
    )
    train(model, optimizer, scheduler, 0, 3)
    torch.save(model.state_dict(), Path(spool).parent / "expected.pt")
    ckpt.save(3)
    ckpt._handoff.join()  # handed to the publishing process: all a training loop has to wait for
    print(ckpt.publisher._process.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.timeout(120)
def test_a_step_saved_just_before_the_training_process_is_killed_is_still_published(local_hub, api, tmp_path):
    repo_id, spool = "alice/proc-orphan", tmp_path / "spool"
    code = (
        f"from tests.test_publisher_process import killed_after_save as k; "
        f"k({repo_id!r}, {local_hub.url!r}, {str(spool)!r})"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == -9, proc.stderr[-3000:]
    child = int(proc.stdout.split()[-1])
    deadline = time.monotonic() + 60
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:  # the orphan finishes, then exits
        time.sleep(0.2)
    assert not Path(f"/proc/{child}").exists(), "the publishing process did not exit after publishing"
    from safetensors.torch import load_file

    expected = torch.load(tmp_path / "expected.pt", weights_only=True)
    weights = load_file(api.hf_hub_download(repo_id, "model.safetensors", revision="step-0000003"))
    assert all(torch.equal(weights[k], expected[k]) for k in expected)
    index = json.loads(Path(api.hf_hub_download(repo_id, "revisions.json")).read_text())
    assert [r["step"] for r in index["revisions"]] == [3]


def test_the_publish_options_reach_the_process_whole_and_a_bad_mode_is_refused(local_hub, api, tmp_path):
    """Options cross as typed JSON (PublishOptions): a resolved `Hub` object and a card too, not only strings."""
    import hubckpt
    from hubckpt.hub.select import resolve_hub

    model = nn.Linear(2, 2)
    options = hubckpt.PublishOptions(card=hubckpt.CardOptions(license="mit"), keep_last=2)
    with hubckpt.Checkpointer(
        "alice/proc-options",
        model=model,
        hub=resolve_hub(local_hub.url),
        spool_dir=tmp_path / "s",
        background="process",
        options=options,
    ) as ckpt:
        assert ckpt.save(1).result(timeout=60).revision == "step-0000001"
    card = Path(api.hf_hub_download("alice/proc-options", "README.md", revision="step-0000001")).read_text()
    assert "license: mit" in card
    with pytest.raises(hubckpt.HubConfigError, match="'process' or 'thread'"):
        hubckpt.Checkpointer("alice/proc-bad", model=model, hub=local_hub.url, background="fork")


def test_an_error_of_the_publisher_reaches_the_caller_with_its_type(local_hub, tmp_path):
    """The child's Publisher refuses a busy spool: the same SpoolBusyError as in-process, at construction,
    with its attributes (the pid of the spool's owner), not only its message."""
    import hubckpt

    spool = tmp_path / "spool"
    with hubckpt.Publisher("alice/proc-busy", hub=local_hub.url, spool_dir=spool):
        with pytest.raises(hubckpt.SpoolBusyError, match="pid") as raised:
            hubckpt.Checkpointer(
                "alice/proc-busy", model=nn.Linear(2, 2), hub=local_hub.url, spool_dir=spool, background="process"
            )
    assert raised.value.pid == os.getpid()


def test_protocol_messages_round_trip_and_errors_keep_their_class_and_fields():
    import hubckpt
    from hubckpt.publishing.pipeline import PublishedRevision
    from hubckpt.publishing.process import protocol as p

    start = p.Start(
        p.PROTOCOL_VERSION, "alice/x", hubckpt.PublishOptions(hub=["local", "hf"], keep_best=2), 10, None, 20
    )
    done = p.Done(3, PublishedRevision("alice/x", "step-0000003", 3, {"local": "abc"}))
    inline = p.InlineTensor.of(torch.arange(6, dtype=torch.int16).reshape(2, 3))
    publish = p.Publish(
        1, 0, {"weights": {}}, {"a": "model/w"}, {"b": inline}, 8, 3, {"loss": 0.5}, None, 1.5, False, []
    )
    for message in (
        start,
        done,
        publish,
        p.Waited(4, None),
        p.Buffers(0, [p.Arena(1, 64)], [p.Buffer("m", "float32", [2], 1, 0)]),
    ):
        assert p.decode(json.loads(json.dumps(p.encode(message)))) == message
    assert torch.equal(p.decode(p.encode(publish)).inline["b"].tensor(), inline.tensor())

    error = hubckpt.RevisionLookupError("no step 7", repo_id="alice/x", wanted="7", nearest=["step-0000006"])
    rebuilt = p.decode(json.loads(json.dumps(p.encode(p.Failed(1, p.ErrorInfo.of(error)))))).error.rebuild()
    assert type(rebuilt) is hubckpt.RevisionLookupError and str(rebuilt) == "no step 7"
    assert (rebuilt.repo_id, rebuilt.wanted, rebuilt.nearest) == ("alice/x", "7", ["step-0000006"])
    other = p.ErrorInfo.of(KeyError("w")).rebuild()
    assert isinstance(other, hubckpt.PublishError) and "KeyError" in str(other)
    with pytest.raises(hubckpt.PublishError, match="unknown message"):
        p.decode({"kind": "Nonsense"})
    with pytest.raises(hubckpt.PublishError, match="different hubckpt versions"):
        p.check_version(p.PROTOCOL_VERSION + 1, "publishing process")


# -- random kills ---------------------------------------------------------------------------------------

TRAIN_SCRIPT = """
import sys, torch, hubckpt
url, spool, repo = sys.argv[1:4]
torch.manual_seed(0)
model = torch.nn.Linear(8, 4)
with hubckpt.Checkpointer(repo, model=model, hub=url, spool_dir=spool, background="process", keep_last=3) as ckpt:
    for step in range(1, 7):
        with torch.no_grad():
            model.weight.fill_(float(step))   # the weights of step s are known: the test checks them
            model.bias.copy_(torch.arange(4.0) * step)
        ckpt.save(step, metrics={"loss": 1.0 / step}, final=step == 6)
"""


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_random_kills_of_the_training_process_or_both_then_a_clean_run_publish_each_step_once(local_hub, api, tmp_path):
    """SIGKILL, at a random moment, either the training process alone (its publishing process carries on) or
    the whole process group; many seeded rounds on one spool, then a clean run: every step published once."""
    import random

    from safetensors.torch import load_file

    seed = test_env.crash_seed()
    print(f"random crash test seed: {seed} (replay: HUBCKPT_CRASH_SEED={seed})")
    rng = random.Random(seed)
    budget = test_env.crash_budget_s()
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT)
    repo_id = f"alice/proc-random-{seed}"
    cmd = [sys.executable, str(script), local_hub.url, str(tmp_path / "spool"), repo_id]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log: list[str] = []
    started = time.monotonic()
    for n in range(8):
        if n >= 3 and time.monotonic() - started > budget:
            break
        delay, group = rng.uniform(1.5, 5.0), rng.random() < 0.5  # the run takes ~4-7 s
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL) if group else proc.kill()
            proc.wait(timeout=30)
        err = proc.stderr.read().decode()
        proc.stderr.close()
        log.append(f"SIGKILL {'group' if group else 'training process'} after {delay:.2f}s: rc={proc.returncode}")
        assert proc.returncode in (0, -signal.SIGKILL), f"seed {seed}: {err[-2000:]}\n{log}"
    clean = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)  # waits for an orphan
    assert clean.returncode == 0, f"seed {seed}: {clean.stderr[-3000:]}\n{log}"

    index = json.loads(Path(api.hf_hub_download(repo_id, "revisions.json")).read_text())
    assert [r["step"] for r in index["revisions"]] == [1, 2, 3, 4, 5, 6], log  # each listed once, in order
    live = {r["name"] for r in index["revisions"] if not r.get("pruned")}
    assert live == {"step-0000004", "step-0000005", "step-0000006"}, log
    heads = {b.name: b.target_commit for b in api.list_repo_refs(repo_id).branches}
    assert set(heads) == {"main"} | live, heads  # no staging branch or pruned branch left
    for name in sorted(live):
        step = int(name.split("-")[1])
        titles = [c.title for c in api.list_repo_commits(repo_id, revision=name)]
        assert titles.count(f"Checkpoint {name} (step {step})") == 1, titles
        weights = load_file(api.hf_hub_download(repo_id, "model.safetensors", revision=name))
        assert torch.equal(weights["weight"], torch.full((4, 8), float(step))), name
        assert torch.equal(weights["bias"], torch.arange(4.0) * step), name
    print("\n".join(log))


def test_thousands_of_tensors_cost_a_handful_of_file_descriptors(local_hub, api, tmp_path):
    """One memfd per batch of buffers, not per tensor: an open-file limit of 1024 must not bound the model."""
    from safetensors.torch import load_file

    import hubckpt

    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(4, 4) for _ in range(300)])  # 600 tensors; + Adam: 1,800 more
    optimizer = torch.optim.Adam(model.parameters())
    before = len(os.listdir("/proc/self/fd"))
    with hubckpt.Checkpointer(
        "alice/proc-many",
        model=model,
        optimizer=optimizer,
        hub=local_hub.url,
        spool_dir=tmp_path / "spool",
        background="process",
        staging_sets=2,
    ) as ckpt:
        model(torch.randn(2, 4)).sum().backward()
        optimizer.step()
        ckpt.wait_staged()
        assert len(os.listdir("/proc/self/fd")) - before < 20
        expected = {k: v.clone() for k, v in model.state_dict().items()}
        ckpt.save(1).result(timeout=120)
        assert len(os.listdir("/proc/self/fd")) - before < 20
    weights = load_file(api.hf_hub_download("alice/proc-many", "model.safetensors", revision="step-0000001"))
    assert all(torch.equal(weights[k], v) for k, v in expected.items())


def test_a_paced_publishing_process_still_publishes_the_captured_values(local_hub, api, tmp_path):
    from safetensors.torch import load_file

    import hubckpt

    model, optimizer, scheduler = make(seed=1)
    with hubckpt.Checkpointer(
        "alice/proc-paced",
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        hub=local_hub.url,
        spool_dir=tmp_path / "spool",
        publish_mb_per_s=200,
    ) as ckpt:
        train(model, optimizer, scheduler, 0, 2)
        expected = {k: v.clone() for k, v in model.state_dict().items()}
        assert not ckpt.save(2).result(timeout=60).skipped
    weights = load_file(api.hf_hub_download("alice/proc-paced", "model.safetensors", revision="step-0000002"))
    assert all(torch.equal(weights[k], expected[k]) for k in expected)


def test_the_publish_cap_spreads_a_publish_but_never_makes_anything_wait(local_hub, api, tmp_path):
    """publish_mb_per_s paces only a publish's upload, and only while nothing waits for it: the staging
    buffers come back at full speed (the next save does not stall), and wait() lifts it (at 2 MB/s this
    upload would take ~25 s)."""
    from safetensors.torch import load_file

    import hubckpt

    torch.manual_seed(0)
    model = torch.nn.Linear(2048, 2048)  # 16 MiB of weights + 32 MiB of AdamW state (uploads read past the cache)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with hubckpt.Checkpointer(
        "alice/proc-cap",
        model=model,
        optimizer=optimizer,
        hub=local_hub.url,
        spool_dir=tmp_path / "spool",
        publish_mb_per_s=2,
        staging_sets=1,
    ) as ckpt:
        for step in (1, 2):
            model(torch.randn(2, 2048)).sum().backward()
            optimizer.step()
            optimizer.zero_grad()
            if step == 1:
                ckpt.wait_staged()
                first = ckpt.save(1)
                time.sleep(3)
                assert not first.done()  # its upload is paced: nothing is waiting for it
        expected = {k: v.clone() for k, v in model.state_dict().items()}
        started = time.monotonic()
        second = ckpt.save(2)  # the only staging set came back at full speed
        assert time.monotonic() - started < 5
        ckpt.wait()
        assert time.monotonic() - started < 10
        assert first.done() and not second.result().skipped
    weights = load_file(
        api.hf_hub_download("alice/proc-cap", "model.safetensors", revision="step-0000002", cache_dir=tmp_path / "dl")
    )
    assert all(torch.equal(weights[k], expected[k]) for k in expected)


def test_the_publishing_process_paces_only_while_nothing_waits():
    from hubckpt import direct_io
    from hubckpt.publishing.process.pacing import Pacing

    now = [0.0]
    pacing = Pacing(clock=lambda: now[0])
    try:
        pacing.start(5)
        assert direct_io._PACER.bytes_per_s == 0  # nothing handed over (jobs resumed from the journal run unpaced)
        pacing.queued(1, 100_000_000)
        assert direct_io._PACER.bytes_per_s == 0  # converting: it holds the staging buffers
        pacing.released(1)
        assert direct_io._PACER.bytes_per_s == 5e6  # uploading, nothing waits: paced
        now[0] = 10.0
        pacing.queued(2, 100_000_000)
        assert direct_io._PACER.bytes_per_s == 0  # another save handed over
        pacing.settled(1)
        assert direct_io._PACER.bytes_per_s == 0
        pacing.released(2)
        # saves 10 s apart: 100 MB must be up within 5 s, so 20 MB/s rather than the cap's 5
        assert direct_io._PACER.bytes_per_s == 20e6
        pacing.waiting(+1)  # wait() / close()
        assert direct_io._PACER.bytes_per_s == 0
        pacing.waiting(-1)
        assert direct_io._PACER.bytes_per_s == 20e6
        pacing.settled(2)
        assert direct_io._PACER.bytes_per_s == 0
        now[0] = 1000.0
        pacing.queued(3, 100_000_000)
        pacing.released(3)
        assert direct_io._PACER.bytes_per_s == 5e6  # saves far apart: the cap itself
    finally:
        direct_io.limit_rate(None)


def test_lifting_the_cap_wakes_a_paced_reader_at_once(tmp_path):
    import threading

    from hubckpt import direct_io
    from hubckpt.direct_io import CHUNK, DirectReader

    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * (3 * CHUNK))
    direct_io.limit_rate(0.5)  # 25 MB would take ~50 s
    try:
        done = threading.Event()
        reader = threading.Thread(target=lambda: (DirectReader(path).read(), done.set()))
        reader.start()
        time.sleep(0.5)
        assert not done.is_set()
        started = time.monotonic()
        direct_io.limit_rate(None)
        assert done.wait(5) and time.monotonic() - started < 5
        reader.join()
    finally:
        direct_io.limit_rate(None)
