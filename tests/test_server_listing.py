"""What a hub holds: `list_models` (filters, sort, pagination), `hf repos ls`, gated repos.

Private repos stay hidden.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx2
import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from hubckpt.server import LocalHubServer


@pytest.fixture(scope="module")
def listing_hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("listing-hub")
    with LocalHubServer(root, list_page_size=2) as hub:
        store = hub.ctx.store
        store.add_account("alice", "user")
        store.add_account("bob", "user")
        store.add_member("acme", "alice")
        tokens = {
            "alice": store.create_token("alice", "write", "a")[1],
            "bob": store.create_token("bob", "write", "b")[1],
        }
        alice = HfApi(endpoint=hub.url, token=tokens["alice"])
        bob = HfApi(endpoint=hub.url, token=tokens["bob"])
        for name in ("bert-tiny", "gpt-small", "bert-base"):
            alice.create_repo(f"alice/{name}")
            time.sleep(0.01)  # distinct creation times for the sort
        alice.create_repo("acme/bert-private", private=True)
        alice.upload_file(
            path_or_fileobj=b"---\ntags: [checkpoints]\nlibrary_name: transformers\n---\n# card\n",
            path_in_repo="README.md",
            repo_id="alice/gpt-small",
        )
        bob.create_repo("bob/bert-bob")
        yield hub, tokens


def _ids(models) -> list[str]:
    return [m.id for m in models]


def test_list_models_filters_sorts_and_pages(listing_hub):
    hub, tokens = listing_hub
    bob = HfApi(endpoint=hub.url, token=tokens["bob"])
    # Page size 2 on this hub: every full listing below crosses pages through the Link header.
    everything = _ids(bob.list_models())
    assert everything == ["alice/bert-base", "alice/bert-tiny", "alice/gpt-small", "bob/bert-bob"]
    assert _ids(bob.list_models(author="alice")) == ["alice/bert-base", "alice/bert-tiny", "alice/gpt-small"]
    assert _ids(bob.list_models(search="bert")) == ["alice/bert-base", "alice/bert-tiny", "bob/bert-bob"]
    assert _ids(bob.list_models(author="alice", search="BERT")) == ["alice/bert-base", "alice/bert-tiny"]
    # Newest first, as on the Hub (created bert-tiny, gpt-small, bert-base; README.md then touched gpt-small).
    assert _ids(bob.list_models(sort="created_at", author="alice")) == [
        "alice/bert-base",
        "alice/gpt-small",
        "alice/bert-tiny",
    ]
    assert _ids(bob.list_models(sort="last_modified", author="alice"))[0] == "alice/gpt-small"
    assert _ids(bob.list_models(limit=3)) == everything[:3]
    assert _ids(bob.list_models(filter="checkpoints")) == ["alice/gpt-small"]
    info = next(iter(bob.list_models(search="gpt-small", full=True)))
    assert info.library_name == "transformers" and "checkpoints" in info.tags
    assert sorted(s.rfilename for s in info.siblings) == [".gitattributes", "README.md"]
    r = httpx2.get(
        f"{hub.url}/api/models", params={"search": "bert"}, headers={"authorization": f"Bearer {tokens['bob']}"}
    )
    assert r.headers["link"].startswith(f"<{hub.url}/api/models?") and 'rel="next"' in r.headers["link"]
    assert len(r.json()) == 2


def test_list_models_shows_private_repos_to_members_only(listing_hub):
    hub, tokens = listing_hub
    alice = HfApi(endpoint=hub.url, token=tokens["alice"])
    assert "acme/bert-private" in _ids(alice.list_models(search="bert"))
    assert next(iter(alice.list_models(author="acme"))).private is True
    for other in (HfApi(endpoint=hub.url, token=tokens["bob"]), HfApi(endpoint=hub.url, token=False)):
        assert "acme/bert-private" not in _ids(other.list_models())
        assert _ids(other.list_models(author="acme")) == []


def test_gated_repos_show_in_model_info_and_listing(listing_hub):
    hub, tokens = listing_hub
    alice = HfApi(endpoint=hub.url, token=tokens["alice"])
    assert alice.model_info("alice/bert-tiny").gated is False
    alice.update_repo_settings("alice/bert-tiny", gated="manual")
    assert alice.model_info("alice/bert-tiny").gated == "manual"
    alice.update_repo_settings("alice/bert-tiny", gated="auto")
    assert alice.model_info("alice/bert-tiny").gated == "auto"
    assert _ids(alice.list_models(gated=True)) == ["alice/bert-tiny"]
    alice.update_repo_settings("alice/bert-tiny", gated=False)
    assert alice.model_info("alice/bert-tiny").gated is False
    with pytest.raises(HfHubHTTPError) as error:
        HfApi(endpoint=hub.url, token=tokens["bob"]).update_repo_settings("alice/bert-tiny", gated="manual")
    assert error.value.response.status_code == 403


def test_hf_repos_ls_lists_the_callers_repos(listing_hub):
    hub, tokens = listing_hub
    alice = HfApi(endpoint=hub.url, token=tokens["alice"])
    alice.upload_file(path_or_fileobj=b"x" * 1000, path_in_repo="blob.txt", repo_id="alice/bert-base")
    repos = {r.id: r for r in alice.list_user_repos()}
    assert set(repos) == {"alice/bert-base", "alice/bert-tiny", "alice/gpt-small", "acme/bert-private"}
    assert repos["acme/bert-private"].visibility == "private"
    assert repos["alice/bert-base"].storage >= 1000
    assert {r.id for r in alice.list_user_repos(namespace="acme")} == {"acme/bert-private"}
    with pytest.raises(HfHubHTTPError) as error:
        list(HfApi(endpoint=hub.url, token=tokens["bob"]).list_user_repos(namespace="acme"))
    assert error.value.response.status_code == 403
    env = {"HF_TOKEN": tokens["alice"], "HF_ENDPOINT": hub.url}
    out = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "hf"), "repos", "ls"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "alice/bert-base" in out.stdout and "acme/bert-private" in out.stdout and "bob/bert-bob" not in out.stdout
