"""Users, orgs, tokens, private repos and the loopback-only rule of single-user mode."""

from __future__ import annotations

import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from hubckpt.errors import AuthError, HubConfigError
from hubckpt.server import LocalHubServer


@pytest.fixture(scope="module")
def token_hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("token-hub")
    with LocalHubServer(root) as hub:
        store = hub.ctx.store
        store.add_account("alice", "user", "Alice A.")
        store.add_account("bob", "user")
        store.add_member("acme", "alice")
        tokens = {
            "alice_write": store.create_token("alice", "write", "ci")[1],
            "alice_read": store.create_token("alice", "read", "laptop")[1],
            "bob_write": store.create_token("bob", "write", "bob", value="bob-given-secret-value")[1],
        }
        yield hub, tokens


def _api(hub, token):
    return HfApi(endpoint=hub.url, token=token)


def test_whoami_answers_as_the_hub(token_hub):
    hub, tokens = token_hub
    me = _api(hub, tokens["alice_write"]).whoami()
    assert me["name"] == "alice" and me["fullname"] == "Alice A." and me["type"] == "user"
    assert [o["name"] for o in me["orgs"]] == ["acme"]
    assert me["auth"]["accessToken"] == {"displayName": "ci", "role": "write"}
    assert _api(hub, "bob-given-secret-value").whoami()["name"] == "bob"
    with pytest.raises(HfHubHTTPError, match="Invalid user token"):
        _api(hub, "hf_not_a_real_token").whoami()


def test_private_repos_are_invisible_to_others(token_hub):
    hub, tokens = token_hub
    alice = _api(hub, tokens["alice_write"])
    alice.create_repo("acme/secret", private=True)
    alice.upload_file(path_or_fileobj=b"s", path_in_repo="s.txt", repo_id="acme/secret")
    assert alice.model_info("acme/secret").private is True
    assert _api(hub, tokens["alice_read"]).list_repo_files("acme/secret") == [".gitattributes", "s.txt"]
    for other in (_api(hub, tokens["bob_write"]), HfApi(endpoint=hub.url, token=False)):
        with pytest.raises(RepositoryNotFoundError):
            other.model_info("acme/secret")
        assert not other.repo_exists("acme/secret")
        with pytest.raises(RepositoryNotFoundError):
            other.upload_file(path_or_fileobj=b"x", path_in_repo="x", repo_id="acme/secret")


def test_read_tokens_and_strangers_cannot_write(token_hub):
    hub, tokens = token_hub
    alice = _api(hub, tokens["alice_write"])
    alice.create_repo("alice/public")
    reader = _api(hub, tokens["alice_read"])
    assert reader.list_repo_files("alice/public") == [".gitattributes"]
    for who in (reader, _api(hub, tokens["bob_write"])):
        with pytest.raises(HfHubHTTPError) as info:
            who.upload_file(path_or_fileobj=b"x", path_in_repo="x", repo_id="alice/public")
        assert info.value.response.status_code == 403
        with pytest.raises(HfHubHTTPError) as info:
            who.create_branch("alice/public", branch="nope")
        assert info.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as info:
        reader.create_repo("alice/other")
    assert info.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as info:
        _api(hub, tokens["bob_write"]).create_repo("acme/not-a-member")
    assert info.value.response.status_code == 403
    # Anonymous callers read public repos only.
    assert HfApi(endpoint=hub.url, token=False).list_repo_files("alice/public") == [".gitattributes"]


def test_tokens_are_stored_hashed_listed_and_revoked(token_hub):
    hub, _ = token_hub
    store = hub.ctx.store
    info, value = store.create_token("bob", "read", "temp")
    assert value not in (hub.ctx.root / "hub.sqlite3").read_bytes().decode("latin-1")
    assert any(t.display_name == "temp" for t in store.list_tokens("bob"))
    assert _api(hub, value).whoami()["name"] == "bob"
    store.revoke_token(info.id)
    with pytest.raises(HfHubHTTPError):
        _api(hub, value).whoami()
    with pytest.raises(AuthError, match="already registered"):
        store.create_token("alice", "write", "dup", value="bob-given-secret-value")
    with pytest.raises(AuthError, match="Unknown user"):
        store.create_token("nobody", "write", "x")


def test_non_loopback_without_tokens_is_refused(tmp_path):
    with pytest.raises(HubConfigError, match="Refusing to listen on 0.0.0.0"):
        LocalHubServer(tmp_path, host="0.0.0.0")
