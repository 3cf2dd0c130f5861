"""The local hub's web pages, through Starlette's test client: what each page shows is what was published,
cards are sanitised, API paths still answer the API, and private repos stay invisible."""

from __future__ import annotations

import json
import math
import re
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi
from safetensors import safe_open
from starlette.testclient import TestClient

from hubckpt.cards import human_size
from hubckpt.publishing import Publisher
from hubckpt.server import LocalHubServer, create_app
from hubckpt.server.web import page_url
from hubckpt.server.web.charts import Point, metric_chart
from hubckpt.server.web.markdown import render_markdown

from .factories import tiny_gpt2_config
from .helpers import run_cli

EVAL_LOSS = [3.0, 2.0, 1.5, 1.7, 1.8]  # best at step 30, final at step 50
HOSTILE_CARD = """---
license: mit
---
# Hostile card

<script>window.__pwned = "script"; document.title = "PWNED";</script>

<img src="nope.png" onerror="window.__pwned = 'onerror'; document.title = 'PWNED'">

<svg onload="window.__pwned = 'svg'"><circle r="4"/></svg>

<a id="js-link" href="javascript:window.__pwned='link';document.title='PWNED'">a javascript: link</a>
<a id="js-link2" href=" JaVaScRiPt:window.__pwned='link2'">another</a>

[markdown javascript link](javascript:window.__pwned='md')

<iframe src="javascript:window.parent.__pwned='iframe'"></iframe>
<form action="javascript:window.__pwned='form'"><button id="js-form">go</button></form>
<div style="background:url(javascript:window.__pwned='css')" onclick="window.__pwned='click'">click me</div>

Plain **markdown** still renders.
"""


def publish_run(url: str, repo_id: str, spool: Path, *, token: str | None = None, private: bool = False) -> dict:
    """A realistic run: a tiny GPT-2 trained a little between five checkpoints, each with metrics."""
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(tiny_gpt2_config())
    states = {}
    with Publisher(repo_id, hub=url, token=token, private=private, spool_dir=spool, monitor="eval_loss") as pub:
        for i, eval_loss in enumerate(EVAL_LOSS):
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.01 * torch.randn_like(p))
            step = 10 * (i + 1)
            pub.publish(
                state_dict=model.state_dict(),
                step=step,
                tokens=step * 4096,
                metrics={"eval_loss": eval_loss, "loss": eval_loss - 0.25, "accuracy": 0.1 * (i + 1)},
                final=i == len(EVAL_LOSS) - 1,
            )
            states[f"step-{step:07d}"] = {k: v.clone() for k, v in model.state_dict().items()}
    return states


class Tables(HTMLParser):
    """Rows of every <table> with an id: cell texts and the hrefs inside each cell."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, list[str]]]]] = {}
        self._table: str | None = None
        self._cell: list | None = None
        self._in_body = False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("id"):
            self._table = attrs["id"]
            self.tables[self._table] = []
        elif self._table and tag == "tbody":
            self._in_body = True
        elif self._table and self._in_body and tag == "tr":
            self.tables[self._table].append([])
        elif self._table and self._in_body and tag == "td":
            self._cell = ["", []]
        elif self._cell is not None and tag == "a":
            self._cell[1].append(attrs.get("href"))

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.tables[self._table][-1].append((self._cell[0].strip(), self._cell[1]))
            self._cell = None
        elif tag == "tbody":
            self._in_body = False
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[0] += data


class Elements(HTMLParser):
    """Every start tag and its attributes."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.found: list[tuple[str, list]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.found.append((tag, attrs))


@pytest.fixture(scope="module")
def client(local_hub):
    with TestClient(create_app(local_hub.ctx)) as c:
        yield c


@pytest.fixture(scope="module")
def run(local_hub, tmp_path_factory):
    repo_id = "alice/web-run"
    states = publish_run(local_hub.url, repo_id, tmp_path_factory.mktemp("web") / "spool")
    return repo_id, states


def _index(api: HfApi, repo_id: str) -> dict:
    return json.loads(open(api.hf_hub_download(repo_id, "revisions.json"), "rb").read())


def test_model_page_shows_every_revision_with_its_metrics_and_links(client, run, api):
    repo_id, states = run
    index = _index(api, repo_id)
    page = client.get(f"/{repo_id}")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    rows = Tables(page.text).tables["revisions-table"]
    assert [r[0][0] for r in rows] == list(states) == [r["name"] for r in index["revisions"]]
    header = page.text.split('id="revisions-table"', 1)[1].split("</thead>", 1)[0]
    metrics = ["eval_loss", "accuracy", "loss"]  # the monitored metric first
    assert re.findall(r'<th(?: class="num")?>([^<]*)</th>', header)[3:6] == metrics
    for row, entry in zip(rows, index["revisions"]):
        name_cell, step, tokens = row[0], row[1][0], row[2][0]
        assert name_cell[1] == [f"/{repo_id}/tree/{entry['name']}"]
        assert step == str(entry["step"]) and tokens == f"{entry['tokens']:,}"
        assert [row[3 + i][0] for i in range(3)] == [f"{entry['metrics'][m]:.4g}" for m in metrics]
        assert row[6][0] == human_size(entry["size"])
        assert row[8][0].split() == sorted(entry["tags"])
        linked = client.get(name_cell[1][0])
        assert linked.status_code == 200 and f'<strong class="mono">{entry["name"]}</strong>' in linked.text
    assert index["best"] == "step-0000030" and index["final"] == "step-0000050"
    # One chart per metric; the best and final revisions are marked on each.
    charts = page.text.count('<svg class="chart"')
    assert charts == 3
    assert page.text.count('class="mark mark-best" data-label="best" data-revision="step-0000030"') == 3
    assert page.text.count('class="mark mark-final" data-label="final" data-revision="step-0000050"') == 3
    assert "<h1>alice/web-run</h1>" in page.text  # the repo card from main, rendered
    # ... without its own chart and revisions table: the page draws them once, above the card
    assert len(re.findall(r"<h2[^>]*>Revisions\b", page.text)) == 1 and "metrics over training" not in page.text
    assert re.search(r"<h2[^>]*>Load a revision", page.text)
    card = api.hf_hub_download(repo_id, "README.md")  # the card itself keeps both, for huggingface.co
    assert "## Revisions" in open(card).read()


def test_revision_page_lists_files_card_tensors_and_neighbours(client, run, api):
    repo_id, states = run
    page = client.get(f"/{repo_id}/tree/step-0000020")
    assert page.status_code == 200
    files = {r[0][0].split()[0]: r[1][0] for r in Tables(page.text).tables["files-table"]}
    infos = {i.path: i for i in api.get_paths_info(repo_id, list(files), revision="step-0000020")}
    assert {"model.safetensors", "README.md", "checkpoint.json"} <= set(files)
    assert all(files[p] == human_size(infos[p].size) for p in files)
    assert 'href="/alice/web-run/tree/step-0000010"' in page.text and 'rel="prev"' in page.text
    assert 'href="/alice/web-run/tree/step-0000030"' in page.text and 'rel="next"' in page.text
    assert "revision <code>step-0000020</code>" in page.text  # its card, rendered
    weights = api.hf_hub_download(repo_id, "model.safetensors", revision="step-0000020")
    with safe_open(weights, "pt") as f:
        expected = sorted((k, list(f.get_slice(k).get_shape())) for k in f.keys())
    tensors = [(r[1][0], json.loads(r[3][0])) for r in _tensor_rows(page.text)]
    assert tensors == expected and all(list(states["step-0000020"][n].shape) == shape for n, shape in expected)
    first = client.get(f"/{repo_id}/tree/step-0000010").text
    assert 'rel="prev"' not in first and 'rel="next"' in first
    assert 'rel="next"' not in client.get(f"/{repo_id}/tree/final").text  # tags find their revision too


def _tensor_rows(html: str) -> list:
    body = html.split('<table class="data tensors">', 1)[1].split("</table>", 1)[0]
    return Tables(f'<table id="t">{body}</table>').tables["t"]


def test_blob_pages_show_text_pretty_json_and_offer_binaries(client, run, api, tmp_path):
    repo_id, _ = run
    raw = open(api.hf_hub_download(repo_id, "checkpoint.json", revision="step-0000020"), "rb").read()
    page = client.get(f"/{repo_id}/blob/step-0000020/checkpoint.json")
    text = unescape(page.text.split('id="file-text">', 1)[1].split("</pre>", 1)[0])
    assert text == json.dumps(json.loads(raw), indent=2, ensure_ascii=False)
    tensors = client.get(f"/{repo_id}/blob/main/model.safetensors").text
    assert "transformer.wte.weight" in tensors and "[32, 16]" in tensors
    binary = bytes(range(256)) * 4
    api.upload_file(path_or_fileobj=binary, path_in_repo="data/blob.bin", repo_id=repo_id)
    page = client.get(f"/{repo_id}/blob/main/data/blob.bin").text
    assert "binary file" in page and f'href="/{repo_id}/resolve/main/data/blob.bin"' in page
    assert open(api.hf_hub_download(repo_id, "data/blob.bin"), "rb").read() == binary
    folder = client.get(f"/{repo_id}/tree/main/data")
    assert folder.status_code == 200 and f'href="/{repo_id}/blob/main/data/blob.bin"' in folder.text
    assert (
        client.get(f"/{repo_id}/tree/main/data/blob.bin", follow_redirects=False).headers["location"]
        == f"/{repo_id}/blob/main/data/blob.bin"
    )
    assert client.get(f"/{repo_id}/blob/main/nope.txt").status_code == 404
    api.create_branch(repo_id, branch="feat/x")
    for path in ("/tree/feat%2Fx/data", "/tree/feat/x/data"):  # the `/` of a branch encoded or not
        listing = client.get(f"/{repo_id}{path}")
        assert listing.status_code == 200 and '<strong class="mono">feat/x</strong>' in listing.text, path
    assert "binary file" in client.get(f"/{repo_id}/blob/feat/x/data/blob.bin").text


def test_commits_page_is_the_branch_history(client, run, api):
    repo_id, _ = run
    page = client.get(f"/{repo_id}/commits/step-0000030")
    rows = Tables(page.text).tables["commits-table"]
    expected = api.list_repo_commits(repo_id, revision="step-0000030")
    assert [r[0][0] for r in rows] == [c.title for c in expected]
    assert rows[0][1][0].split() == ["step-0000030", "best"]  # the refs at the revision's head commit


def test_compare_separates_the_weights_from_the_training_state(client, local_hub, tmp_path):
    """With training_state/ published, the optimizer's step counters (relative change 1 and more) sorted
    above every weight: the page a new user opens showed a screenful of `state.N.step` rows first, and
    its summary counted optimizer tensors as weights ("112 changed" for 28 weights)."""
    import torch

    from hubckpt.publishing import Publisher

    repo_id = "alice/web-compare-state"
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=0.5)
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "spool") as pub:
        for step in (1, 2):
            model(torch.ones(3)).sum().backward()
            opt.step()
            pub.publish(state_dict=model.state_dict(), step=step, training_state={"optimizer": opt.state_dict()})
    page = client.get(f"/{repo_id}/compare/step-0000001...step-0000002")
    assert page.status_code == 200
    names = [c.split('data-tensor="', 1)[1].split('"', 1)[0] for c in page.text.split('<tr class="status-')[1:]]
    assert sorted(names[:2]) == ["bias", "weight"] and any(n.startswith("training_state/") for n in names[2:])
    tables = Tables(page.text).tables
    assert sorted(row[0][0] for row in tables["compare-table"]) == ["bias", "weight"]  # the weights alone
    state = [row[0][0] for row in tables["compare-state-table"]]
    assert len(state) == 6 and all(n.startswith("training_state/") for n in state)  # exp_avg, exp_avg_sq, step x 2
    summary = page.text.split('id="compare-summary">', 1)[1].split("</p>", 1)[0]
    assert re.sub(r"<[^>]+>|\s+", " ", summary).split() == ["2", "changed"]
    state_summary = page.text.split('id="compare-state-summary"', 1)[1].split("</p>", 1)[0]
    assert "6 changed" in re.sub(r"<[^>]+>", "", state_summary)


def test_compare_says_which_tensors_changed_and_by_how_much(client, run):
    repo_id, states = run
    page = client.get(f"/{repo_id}/compare/step-0000010...step-0000050")
    assert page.status_code == 200
    a, b = states["step-0000010"], states["step-0000050"]
    seen = 0
    for chunk in page.text.split('<tr class="status-')[1:]:
        name = chunk.split('data-tensor="', 1)[1].split('"', 1)[0]
        status = chunk.split('data-status="', 1)[1].split('"', 1)[0]
        rel = float(chunk.split('data-rel="', 1)[1].split('"', 1)[0])
        expected = float((b[name].double() - a[name].double()).norm() / a[name].double().norm())
        assert status == "changed" and math.isclose(rel, expected, rel_tol=1e-9), name
        seen += 1
    assert seen == len({k for k in a if not k.startswith("lm_head")})
    same = client.get(f"/{repo_id}/compare/step-0000020...step-0000020").text
    assert 'data-status="changed"' not in same and f"{seen} unchanged" in same
    picked = client.get(f"/{repo_id}/compare?a=step-0000010&b=final", follow_redirects=False)
    assert picked.headers["location"] == f"/{repo_id}/compare/step-0000010...final"
    assert client.get(f"/{repo_id}/compare/step-0000010...nope").status_code == 404


def test_api_paths_still_answer_the_api(client, run, api):
    repo_id, _ = run
    info = client.get(f"/api/models/{repo_id}")
    assert info.headers["content-type"] == "application/json" and info.json()["id"] == repo_id
    missing = client.get("/api/not-an-endpoint")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/json"
    raw = client.get(f"/{repo_id}/resolve/main/revisions.json")
    assert raw.content == open(api.hf_hub_download(repo_id, "revisions.json"), "rb").read()
    page_404 = client.get("/alice/no-such-repo")
    assert page_404.status_code == 404 and page_404.headers["content-type"].startswith("text/html")
    assert client.get("/front/hubckpt/style.css").headers["content-type"].startswith("text/css")


def test_hostile_card_is_sanitised_and_pages_carry_a_strict_csp(client, api, local_hub):
    repo_id = "alice/web-hostile"
    api.create_repo(repo_id, exist_ok=True)
    api.upload_file(path_or_fileobj=HOSTILE_CARD.encode(), path_in_repo="README.md", repo_id=repo_id)
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><script>alert(2)</script></svg>'
    api.upload_file(path_or_fileobj=svg, path_in_repo="evil.svg", repo_id=repo_id)
    page = client.get(f"/{repo_id}")
    card = page.text.split('<article class="card markdown">', 1)[1].split("</article>", 1)[0]
    assert "<h1>Hostile card</h1>" in card and "<strong>markdown</strong>" in card
    tags = Elements(card).found
    assert {"script", "iframe", "form", "style", "svg", "button"}.isdisjoint(t for t, _ in tags)
    for tag, attrs in tags:
        for name, value in attrs:
            assert not name.startswith("on") and name != "style", (tag, name)
            assert "javascript" not in (value or "").lower() and "__pwned" not in (value or ""), (tag, name, value)
    assert '<a rel="noopener noreferrer nofollow">a javascript: link</a>' in card  # the link lost its href (and id)
    assert "<script" not in page.text  # the pages themselves have no inline script either
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
    raw = client.get(f"/{repo_id}/raw/main/evil.svg")
    assert raw.headers["content-type"] == "image/svg+xml" and "sandbox" in raw.headers["content-security-policy"]
    assert "script-src" not in raw.headers["content-security-policy"]  # default-src 'none' forbids scripts


def test_hostile_index_is_escaped(client, api):
    repo_id = "alice/web-hostile-index"
    evil = "<img src=x onerror=alert(1)>"
    index = {
        "format_version": 1,
        "monitor": evil,
        "mode": "min",
        "best": evil,
        "final": None,
        "revisions": [
            {"name": evil, "step": 1, "metrics": {evil: 1.0}, "tags": [evil], "date": evil, "size": 3},
            {"name": "step-2", "step": 2, "metrics": {"loss": "NaN"}, "tags": [], "size": 12},
        ],
    }
    api.create_repo(repo_id, exist_ok=True)
    api.upload_file(path_or_fileobj=json.dumps(index).encode(), path_in_repo="revisions.json", repo_id=repo_id)
    page = client.get(f"/{repo_id}")
    assert page.status_code == 200 and evil not in page.text and "&lt;img src=x onerror=alert(1)&gt;" in page.text
    assert all(tag != "img" or dict(attrs).get("src") != "x" for tag, attrs in Elements(page.text).found)
    # An index of the wrong shape (a step that is text, a metric that is text) is refused whole by its parser
    # (formats/index.py): the page still renders, without any of it.
    index["revisions"][1]["step"] = "two"
    index["revisions"][0]["metrics"] = {"text": evil}
    api.upload_file(path_or_fileobj=json.dumps(index).encode(), path_in_repo="revisions.json", repo_id=repo_id)
    page = client.get(f"/{repo_id}")
    assert page.status_code == 200 and evil not in page.text


def test_login_destination_stays_on_this_hub():
    from hubckpt.server.web.access import safe_next

    for bad in ("//evil.example", "/\\evil.example", "/\t/evil.example", "https://evil.example", "", None, "/\n/x"):
        assert safe_next(bad) == "/", bad
    assert safe_next("/alice/secret/tree/step-1?x=1") == "/alice/secret/tree/step-1?x=1"


def test_markdown_sanitiser_units():
    html = render_markdown(
        "[a](config.json) ![m](./metrics.svg) [up](../../etc/passwd) [x](https://example.org/)",
        repo_id="a/b",
        revision="feat/x",
    )
    assert 'href="/a/b/blob/feat%2Fx/config.json"' in html and 'src="/a/b/raw/feat%2Fx/metrics.svg"' in html
    assert "passwd" not in html.split("up")[0] and 'href="https://example.org/"' in html
    assert 'rel="noopener noreferrer nofollow"' in html
    assert render_markdown("<a href='vbscript:x'>v</a><a href='data:text/html,x'>d</a>").count("href") == 0


def test_chart_marks_and_non_finite_values():
    svg = metric_chart(
        "loss", [Point(1, 2.0, "a"), Point(2, float("nan"), "b"), Point(3, 1.0, "c")], {"c": "best", "a": "final"}
    )
    assert 'data-revision="c"' in svg and "mark-best" in svg and "mark-final" in svg
    assert svg.count('<circle class="pt"') == 2  # the NaN point is left out
    assert metric_chart("loss", [], {}) == ""


def test_single_user_mode_shows_private_repos(client, api):
    api.create_repo("alice/web-private-single", private=True, exist_ok=True)
    assert 'href="/alice/web-private-single"' in client.get("/").text
    assert client.get("/alice/web-private-single").status_code == 200
    assert "single-user mode" in client.get("/login").text


# -- access with tokens -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_hub(tmp_path_factory):
    with LocalHubServer(tmp_path_factory.mktemp("web-token-hub")) as hub:
        store = hub.ctx.store
        store.add_account("alice", "user")
        store.add_account("bob", "user")
        alice = store.create_token("alice", "write", "ci")[1]
        bob = store.create_token("bob", "read", "bob")[1]
        api = HfApi(endpoint=hub.url, token=alice)
        api.create_repo("alice/secret", private=True)
        api.upload_file(
            path_or_fileobj=b"---\nlicense: mit\n---\n# secret card\n", path_in_repo="README.md", repo_id="alice/secret"
        )
        api.create_repo("alice/open")
        yield hub, alice, bob


def test_private_repos_are_invisible_without_a_token_that_may_read_them(token_hub):
    hub, alice, bob = token_hub
    with TestClient(create_app(hub.ctx)) as anonymous:
        home = anonymous.get("/").text
        assert 'href="/alice/open"' in home and "secret" not in home and 'href="/login?next=' in home
        for path in (
            "/alice/secret",
            "/alice/secret/tree/main",
            "/alice/secret/blob/main/README.md",
            "/alice/secret/raw/main/README.md",
            "/alice/secret/commits/main",
            "/alice/secret/compare/main...main",
        ):
            page = anonymous.get(path)
            assert page.status_code == 404 and "secret card" not in page.text and "Repository not found" in page.text, (
                path
            )
        anonymous.cookies.set("hubckpt_token", bob)
        assert "secret" not in anonymous.get("/").text and anonymous.get("/alice/secret").status_code == 404


def test_login_sets_a_strict_httponly_cookie_and_logout_clears_it(token_hub):
    hub, alice, _ = token_hub
    with TestClient(create_app(hub.ctx)) as browser:
        wrong = browser.post(
            "/login", data={"token": "hf_not-a-token", "next": "/alice/secret"}, follow_redirects=False
        )
        assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
        ok = browser.post("/login", data={"token": alice, "next": "/alice/secret"}, follow_redirects=False)
        assert ok.status_code == 303 and ok.headers["location"] == "/alice/secret"
        cookie = ok.headers["set-cookie"].lower()
        assert (
            "hubckpt_token=" in cookie and "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
        )
        assert "secret card" in browser.get("/alice/secret").text and 'href="/alice/secret"' in browser.get("/").text
        assert browser.get("/api/models/alice/secret").status_code == 401  # the cookie is no API credential
        out = browser.post("/logout", follow_redirects=False)
        assert out.status_code == 303 and "max-age=0" in out.headers["set-cookie"].lower()
        assert browser.get("/alice/secret").status_code == 404
        evil = browser.post(
            "/login", data={"token": alice}, headers={"origin": "http://evil.example"}, follow_redirects=False
        )
        assert evil.status_code == 403 and "set-cookie" not in evil.headers
        away = browser.post("/login", data={"token": alice, "next": "//evil.example/x"}, follow_redirects=False)
        assert away.headers["location"] == "/"
        browser.cookies.clear()
        browser.cookies.set("hubckpt_token", "hf_revoked-or-made-up")
        stale = browser.get("/")
        assert (
            stale.status_code == 200
            and "Log in" in stale.text
            and "hubckpt_token" in stale.headers.get("set-cookie", "")
        )


def test_page_links(local_hub):
    assert page_url("http://127.0.0.1:8900/", "me/exp") == "http://127.0.0.1:8900/me/exp"
    assert page_url("http://h", "me/exp", "feat/x") == "http://h/me/exp/tree/feat%2Fx"


@pytest.mark.slow
def test_cli_prints_the_page_links(client, run, local_hub):
    repo_id, _ = run
    listing = run_cli("ls", repo_id, "--hub", local_hub.url)
    assert listing.returncode == 0 and listing.stdout.splitlines()[-1] == f"page: {local_hub.url}/{repo_id}"
    shown = run_cli("show", f"{repo_id}@step-0000020", "--hub", local_hub.url)
    link = shown.stdout.splitlines()[-1]
    assert link == f"page: {local_hub.url}/{repo_id}/tree/step-0000020"
    assert client.get(link.split(local_hub.url, 1)[1]).status_code == 200


def test_tensor_comparison_edge_cases(tmp_path):
    from safetensors.torch import save_file

    from hubckpt.server.web import tensors

    save_file(
        {
            "same": torch.arange(4.0),
            "bf16": torch.ones(2, dtype=torch.bfloat16),
            "zero": torch.zeros(3),
            "gone": torch.ones(1),
            "shape": torch.ones(2, 2),
        },
        tmp_path / "a.safetensors",
    )
    save_file(
        {
            "same": torch.arange(4.0),
            "bf16": torch.full((2,), 1.5, dtype=torch.bfloat16),
            "zero": torch.ones(3),
            "new": torch.ones(1),
            "shape": torch.ones(4),
        },
        tmp_path / "b.safetensors",
    )
    sides = [
        {t.name: (t, tmp_path / f) for t in tensors.read_header(tmp_path / f, f)[0]}
        for f in ("a.safetensors", "b.safetensors")
    ]
    got = {c.name: (c.status, c.rel_change, c.max_abs) for c in tensors.compare(*sides)}
    assert got == {
        "same": ("unchanged", 0.0, 0.0),
        "bf16": ("changed", 0.5, 0.5),
        "zero": ("changed", math.inf, 1.0),
        "gone": ("removed", None, None),
        "new": ("added", None, None),
        "shape": ("reshaped", None, None),
    }
    (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(tensors.HeaderError):
        tensors.read_header(tmp_path / "bad.safetensors", "bad.safetensors")


def test_the_tensor_table_refuses_a_header_whose_tensors_overlap(tmp_path):
    """The web pages read headers with the one strict parser: tensors sharing bytes are not listed as two."""
    import struct

    from hubckpt.server.web.tensors import HeaderError, read_header

    header = {
        "w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]},
        "v": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]},
    }
    raw = json.dumps(header).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(12))
    with pytest.raises(HeaderError, match="overlap"):
        read_header(path, "model.safetensors")
