"""Users, orgs, tokens, private repos and the loopback-only rule of single-user mode."""

from __future__ import annotations

import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from hubckpt.errors import AuthError, HubConfigError
from hubckpt.server import LocalHubServer

from .helpers import run_cli


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


def _files_holding(root, secret: str) -> list[str]:
    """Every file of the data folder (the database, its -wal and -shm, objects, ...) that holds `secret`."""
    needle = secret.encode()
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes())


def test_tokens_are_stored_hashed_listed_and_revoked(token_hub):
    hub, _ = token_hub
    store = hub.ctx.store
    info, value = store.create_token("bob", "read", "temp")
    # In WAL mode new rows sit in hub.sqlite3-wal until a checkpoint: every file must be checked,
    # and the check must see a value written in plain text (a planted canary proves it does).
    canary = "plain-text-canary-" + value[-12:]
    store.meta_setdefault("test-canary", canary)
    assert _files_holding(hub.ctx.root, canary), "the check must find a plain-text value wherever SQLite put it"
    assert _files_holding(hub.ctx.root, value) == []
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
    import os

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    with pytest.raises(HubConfigError, match="Refusing to listen on 0.0.0.0"):
        LocalHubServer(tmp_path, host="0.0.0.0")
    before = open_fds()
    for _ in range(3):  # and a refused start leaves no database connection (or socket) open behind it
        with pytest.raises(HubConfigError):
            LocalHubServer(tmp_path, host="0.0.0.0")
    assert open_fds() == before


def test_revoking_the_last_token_keeps_authentication_on(tmp_path):
    root = tmp_path / "hub"
    with LocalHubServer(root) as hub:
        store = hub.ctx.store
        store.add_account("alice", "user")
        info, value = store.create_token("alice", "write", "only")
        _api(hub, value).create_repo("alice/kept")
        store.revoke_token(info.id)
        anonymous = HfApi(endpoint=hub.url, token=False)
        with pytest.raises(HfHubHTTPError) as error:
            anonymous.create_repo("alice/open-to-all")
        assert error.value.response.status_code == 401
        import httpx2

        assert httpx2.get(f"{hub.url}/api/whoami-v2").status_code == 401
        with pytest.raises(HfHubHTTPError):
            _api(hub, value).whoami()  # the revoked token
        with pytest.raises(HfHubHTTPError):
            anonymous.upload_file(path_or_fileobj=b"x", path_in_repo="x", repo_id="alice/kept")
        assert anonymous.list_repo_files("alice/kept") == [".gitattributes"]  # public reads only
    listing = run_cli("token", "list", "--root", str(root))
    assert (
        listing.returncode == 0 and "authentication is on" in listing.stdout and "loopback only" not in listing.stdout
    )
    # A hub that stays on with no token may still listen beyond loopback (nobody can write to it).
    with LocalHubServer(root, host="0.0.0.0") as exposed:
        assert exposed.ctx.exposed and not exposed.ctx.single_user


def test_auth_off_is_explicit_and_refused_while_exposed(tmp_path):
    import json
    import os

    root = tmp_path / "hub"
    with LocalHubServer(root) as hub:
        hub.ctx.store.add_account("alice", "user")
        info, _ = hub.ctx.store.create_token("alice", "write", "only")
        refused = run_cli("token", "auth-off", "--root", str(root))
        assert refused.returncode != 0 and "revoke them first" in (refused.stdout + refused.stderr)
        hub.ctx.store.revoke_token(info.id)
        # server.json says a server of this folder listens on every interface, and it answers.
        port = hub.url.rsplit(":", 1)[1]
        (root / "server.json").write_text(
            json.dumps({"pid": os.getpid(), "url": f"http://0.0.0.0:{port}", "root": str(hub.ctx.root)})
        )
        refused = run_cli("token", "auth-off", "--root", str(root))
        assert refused.returncode != 0 and "beyond loopback" in (refused.stdout + refused.stderr)
        assert not hub.ctx.single_user
        # A server that listens beyond loopback refuses single-user mode per request, whatever the database says.
        hub.ctx.exposed = True
        hub.ctx.store.disable_auth()
        with pytest.raises(HfHubHTTPError) as error:
            HfApi(endpoint=hub.url, token=False).create_repo("local/x")
        assert error.value.response.status_code == 401
        hub.ctx.exposed = False
        (root / "server.json").unlink()
        hub.ctx.store.create_token("alice", "write", "again")
    from hubckpt.server.storage import open_data_folder

    store = open_data_folder(root.resolve())
    for t in store.list_tokens():
        store.revoke_token(t.id)
    done = run_cli("token", "auth-off", "--root", str(root))
    assert done.returncode == 0, done.stderr
    assert store.auth_required() is False


def test_lfs_verify_needs_write_access(token_hub):
    import hashlib
    import io
    import os

    import httpx2

    hub, tokens = token_hub
    alice = _api(hub, tokens["alice_write"])
    alice.create_repo("acme/verify-secret", private=True, exist_ok=True)
    blob = os.urandom(2048)
    alice.upload_file(path_or_fileobj=io.BytesIO(blob), path_in_repo="w.bin", repo_id="acme/verify-secret")
    body = {"oid": hashlib.sha256(blob).hexdigest(), "size": len(blob)}
    url = f"{hub.url}/api/hubckpt/lfs-verify/acme/verify-secret"
    assert httpx2.post(url, json=body, headers={"authorization": f"Bearer {tokens['alice_write']}"}).status_code == 200
    # Anyone else learns nothing: the same answer whether or not the private repo holds the object.
    for headers in ({}, {"authorization": f"Bearer {tokens['bob_write']}"}):
        answers = {
            httpx2.post(url, json=probe, headers=headers).status_code for probe in (body, {"oid": "0" * 64, "size": 1})
        }
        assert answers in ({401}, {404}), answers
    reader = httpx2.post(url, json=body, headers={"authorization": f"Bearer {tokens['alice_read']}"})
    assert reader.status_code == 403


def test_create_repo_does_not_reveal_private_names(token_hub):
    hub, tokens = token_hub
    alice = _api(hub, tokens["alice_write"])
    alice.create_repo("acme/hidden-name", private=True, exist_ok=True)
    for who, expected in ((HfApi(endpoint=hub.url, token=False), 401), (_api(hub, tokens["bob_write"]), 403)):
        statuses = set()
        for name in ("acme/hidden-name", "acme/never-created"):
            with pytest.raises(HfHubHTTPError) as error:
                who.create_repo(name, private=True)
            statuses.add(error.value.response.status_code)
        assert statuses == {expected}
    with pytest.raises(HfHubHTTPError) as error:
        alice.create_repo("acme/hidden-name")
    assert error.value.response.status_code == 409  # the owner may know


def test_org_fullname_shows_in_whoami(token_hub):
    hub, tokens = token_hub
    result = run_cli("org", "add", "acme", "--fullname", "Acme Research Lab", "--root", str(hub.ctx.root))
    assert result.returncode == 0, result.stderr
    orgs = _api(hub, tokens["alice_write"]).whoami()["orgs"]
    assert orgs == [{"type": "org", "name": "acme", "fullname": "Acme Research Lab"}]
