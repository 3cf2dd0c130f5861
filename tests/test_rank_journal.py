"""Each rank's journal of multi-rank saves (`publishing/rank_journal.py`): what is pending after a kill, which
jobs the ranks can finish together, and what a torn write leaves. The re-run itself (torchrun, a killed rank,
the revision finished from the journals) is tests/test_multirank.py's random-kill test."""

from __future__ import annotations

import json

from hubckpt.publishing.rank_journal import COMMIT_FOLDER, RankJournal, decide

REPO = "local:/hub/me/run"


def _written(journal: RankJournal, job: str, step: int, *, files=(), commit=None, layout="L", repo=REPO) -> None:
    journal.written(job, repo=repo, world=2, rank=0, step=step, layout=layout, files=list(files), commit=commit)


def test_pending_is_written_and_not_finished_and_a_torn_last_line_is_skipped(tmp_path):
    journal = RankJournal(tmp_path)
    _written(journal, "step-0000002", 2)
    journal.finished("step-0000002", REPO, "published")
    _written(journal, "step-0000004", 4)
    _written(journal, "step-0000003", 3)
    _written(journal, "step-0000009", 9, repo="local:/hub/me/other")  # another repo's job: not this repo's
    with open(journal.path, "ab") as f:
        f.write(b'{"event": "finished", "job": "step-00000')  # a write torn by a kill
    assert [p.job for p in journal.pending(REPO)] == ["step-0000003", "step-0000004"]


def test_compact_keeps_pending_jobs_and_removes_the_folders_of_finished_ones(tmp_path):
    journal = RankJournal(tmp_path)
    for job, step in (("step-0000001", 1), ("step-0000002", 2)):
        (tmp_path / job).mkdir()
        _written(journal, job, step)
    journal.finished("step-0000001", REPO, "failed", "why")
    journal.compact()
    assert not (tmp_path / "step-0000001").exists() and (tmp_path / "step-0000002").is_dir()
    records = [json.loads(line) for line in journal.path.read_text().splitlines()]
    assert [(r["event"], r["job"]) for r in records] == [("written", "step-0000002")]


def test_a_job_is_complete_only_with_every_recorded_file_at_its_size(tmp_path):
    journal = RankJournal(tmp_path)
    folder = tmp_path / "step-0000005"
    (folder / COMMIT_FOLDER).mkdir(parents=True)
    (folder / "model-00001-of-00002.safetensors").write_bytes(b"x" * 10)
    (folder / COMMIT_FOLDER / "config.json").write_bytes(b"{}")
    files = [{"path": "model-00001-of-00002.safetensors", "sha256": "0" * 64, "size": 10}]
    commit = {"small": [{"path": "config.json", "sha256": "0" * 64, "size": 2}]}
    _written(journal, "step-0000005", 5, files=files, commit=commit)
    (pending,) = journal.pending(REPO)
    assert pending.complete(folder) is None
    (folder / COMMIT_FOLDER / "config.json").unlink()
    assert "config.json is missing" in (pending.complete(folder) or "")
    (folder / COMMIT_FOLDER / "config.json").write_bytes(b"{}")
    (folder / "model-00001-of-00002.safetensors").write_bytes(b"x" * 4)
    assert "holds 4 bytes, not the 10 recorded" in (pending.complete(folder) or "")


def test_decide_finishes_only_what_every_rank_holds_alike():
    def key(step, layout="L", why=None, commit=False):
        return [REPO, 2, step, layout, why, commit]

    rank0 = {
        "step-0000003": key(3, commit=True),
        "step-0000004": key(4, commit=True),
        "step-0000005": key(5, commit=True),
        "step-0000006": key(6, commit=True),
        "step-0000007": key(7),
    }
    rank1 = {
        "step-0000004": key(4),
        "step-0000003": key(3),
        "step-0000005": key(5, layout="other"),
        "step-0000006": key(6, why="x is missing"),
        "step-0000007": key(7),
        "step-0000008": key(8),
    }
    finish, dropped = decide([rank0, rank1])
    assert finish == ["step-0000003", "step-0000004"]  # in step order
    assert "layouts" in dropped["step-0000005"]
    assert "x is missing" in dropped["step-0000006"]
    assert "rank 0 did not record" in dropped["step-0000007"]
    assert "rank(s) 0 did not write" in dropped["step-0000008"]
