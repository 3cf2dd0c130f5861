"""hub/patches.py reaches into other libraries where they have no public hook: these tests fail as soon as one
of them changes what is relied on there (a private name, its shape, a message), rather than users finding out."""

from __future__ import annotations

import importlib
import inspect
import io
import logging

import pytest


@pytest.fixture
def client_factory():
    """Restore huggingface_hub's client factory (and so its shared client) after the test."""
    from huggingface_hub import set_client_factory
    from huggingface_hub.utils import _http

    before = _http._GLOBAL_CLIENT_FACTORY
    yield
    set_client_factory(before)


def test_the_client_factory_is_where_hubckpt_reads_it():
    from huggingface_hub import get_session
    from huggingface_hub.utils import _http

    factory = _http._GLOBAL_CLIENT_FACTORY
    assert callable(factory)
    client = get_session()
    # The hooks are added through the client's public event_hooks, which must hold lists of request and
    # response hooks (the response hooks run before the body is read: hub/budget.py reads headers there).
    assert isinstance(client.event_hooks["request"], list) and isinstance(client.event_hooks["response"], list)
    assert type(client).__module__.split(".")[0] in ("httpx2", "httpx")


def test_a_request_hook_reaches_every_client_and_wraps_the_users_factory(local_hub, client_factory):
    from huggingface_hub import get_session, set_client_factory
    from huggingface_hub.utils import _http

    from hubckpt.hub.patches import add_request_hook
    from hubckpt.hub.retries import hub_timeouts, install_timeouts

    seen: list = []

    def record(request) -> None:
        seen.append(request.extensions.get("timeout"))

    install_timeouts()
    add_request_hook(record)
    add_request_hook(record)  # idempotent
    assert get_session().event_hooks["request"].count(record) == 1
    get_session().get(f"{local_hub.url}/api/hubckpt/health").raise_for_status()
    assert seen and seen[-1]["read"] == hub_timeouts()["read"]  # the timeout hook ran first

    # A factory the user sets afterwards (proxies, certificates) is wrapped, not replaced.
    def users_factory():
        client = _http.default_client_factory()
        client.headers["x-users-factory"] = "1"
        return client

    set_client_factory(users_factory)
    add_request_hook(record)
    client = get_session()
    assert client.headers["x-users-factory"] == "1" and client.event_hooks["request"].count(record) == 1


def test_the_endpoint_constants_are_read_at_call_time(monkeypatch):
    from huggingface_hub import constants, hf_hub_url

    from hubckpt.hub.patches import set_default_endpoint

    for name in ("ENDPOINT", "HUGGINGFACE_CO_URL_TEMPLATE"):
        assert isinstance(getattr(constants, name), str)
        monkeypatch.setattr(constants, name, getattr(constants, name))  # restored after the test
    for field in ("{repo_id}", "{revision}", "{filename}"):
        assert field in constants.HUGGINGFACE_CO_URL_TEMPLATE
    set_default_endpoint("http://127.0.0.1:9/")
    assert hf_hub_url("alice/x", "f.bin", revision="step-1") == "http://127.0.0.1:9/alice/x/resolve/step-1/f.bin"


def test_the_upload_read_size_is_a_class_attribute_read_per_body(monkeypatch):
    from hubckpt.hub import patches

    module = importlib.import_module(patches._STREAM_MODULES[0])
    stream_class = module.IteratorByteStream
    assert isinstance(stream_class.CHUNK_SIZE, int)
    # huggingface_hub's client sends a file body as this very class...
    client_module = importlib.import_module(patches._STREAM_MODULES[0].split(".")[0])
    body = client_module.Request("PUT", "http://127.0.0.1:9/", content=io.BytesIO(b"x" * 10)).stream
    assert isinstance(body, stream_class)
    # ...which reads the file CHUNK_SIZE bytes at a time, looked up when the body is sent.
    sizes: list[int] = []

    class Recording(io.BytesIO):
        def read(self, size=-1):
            sizes.append(size)
            return super().read(size)

    monkeypatch.setattr(stream_class, "CHUNK_SIZE", stream_class.CHUNK_SIZE)  # restored after the test
    patches.read_uploads_in_large_pieces()
    assert stream_class.CHUNK_SIZE == patches.UPLOAD_READ_BYTES
    assert b"".join(stream_class(Recording(b"y" * 10))) == b"y" * 10
    assert sizes[0] == patches.UPLOAD_READ_BYTES


@pytest.mark.parametrize("drop", ["XET_FALLBACK_NOTICE", "EMPTY_COMMIT_WARNING"])
def test_dropped_warnings_are_still_logged_by_that_logger_and_only_they_are_dropped(drop):
    from hubckpt.hub import patches

    name, fragment = getattr(patches, drop)
    module = importlib.import_module(name)
    assert module.logger.name == name
    assert fragment in inspect.getsource(module)

    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = Collect()
    module.logger.addHandler(handler)
    try:
        with patches.dropped_log_messages((name, fragment)):
            module.logger.warning("Uploading ... %s. Really.", fragment)
            module.logger.warning("something else")
        module.logger.warning("after: %s", fragment)
    finally:
        module.logger.removeHandler(handler)
    assert records == ["something else", f"after: {fragment}"]
