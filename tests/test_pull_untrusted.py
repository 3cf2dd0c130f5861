"""What is left of issue 20's scenarios: `pull --trainer-checkpoint` never leaves a repo's own pickles in DEST, and
a corrupt file of a repo without checkpoint.json is reported against the hub's ETag, not checkpoint.json."""

from __future__ import annotations

import hashlib
import uuid

import pytest

import hubckpt
from hubckpt.errors import IntegrityError

from .helpers import run_cli
from .hostile_hub import COMMIT, HostileHub
from .test_untrusted import repo_files

PICKLES = ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin")


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    home = tmp_path / "hf_home"
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setenv("HF_HOME", str(home))
    return home / "hub"


def test_pull_trainer_checkpoint_drops_the_repos_own_pickles(tmp_path, hf_cache):
    """A revision whose training state has only the loop part, and whose repo also holds Trainer pickles: DEST
    gets trainer_state.json but none of the repo's pickles (trainer.train would torch.load them)."""
    from hubckpt.conversion.training_state import save_state

    state_dir = tmp_path / "state"
    state_dir.mkdir()
    save_state({"step": 1, "epoch": 0.5}, state_dir, "loop")
    extra = {f"training_state/{p.name}": p.read_bytes() for p in state_dir.iterdir()}
    extra.update({name: b"\x80\x04 a pickle of anyone's choosing" for name in PICKLES})
    repo = f"eve/pickles-{uuid.uuid4().hex[:8]}"
    with HostileHub(repo_id=repo, files=repo_files(extra=extra), branches={"main": COMMIT, "step-1": COMMIT}) as hub:
        dest = tmp_path / "dest"
        out = run_cli("pull", f"{repo}@step-1", str(dest), "--trainer-checkpoint", "--hub", hub.url)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Wrote a Trainer checkpoint" in out.stdout
    names = {p.name for p in dest.iterdir()}
    assert "trainer_state.json" in names and "model.safetensors" in names
    assert not names & set(PICKLES), names & set(PICKLES)


@pytest.mark.parametrize("streams", ["8", "0"], ids=["range-streams", "hf_hub_download"])
def test_a_corrupt_file_of_an_etag_only_repo_names_the_etag(hf_cache, monkeypatch, streams):
    monkeypatch.setenv("HUBCKPT_READ_STREAMS", streams)
    files = repo_files()
    del files["checkpoint.json"]  # not published by hubckpt: the LFS ETag is all there is to check against
    good = files["model.safetensors"]
    bad = bytearray(good)
    bad[-1] ^= 0x01
    files["model.safetensors"] = bytes(bad)
    repo = f"eve/etag-{uuid.uuid4().hex[:8]}"
    etags = {"model.safetensors": hashlib.sha256(good).hexdigest()}  # the oid of the good bytes
    with HostileHub(repo_id=repo, files=files, branches={"main": COMMIT, "step-1": COMMIT}, etags=etags) as hub:
        with pytest.raises(IntegrityError) as caught:
            hubckpt.load_state_dict(repo, step=1, hub=hub.url)
    message = str(caught.value)
    assert "the hub gave as its ETag (LFS sha256)" in message
    assert "checkpoint.json" not in message
