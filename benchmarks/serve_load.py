"""HTTP serving under load: `embedstack serve` against infinity-emb, and what our server does with bad clients.

Part ``load`` (default). Both servers run as subprocesses on loopback, on the same model folder
(all-MiniLM-L6-v2, the one ``embedstack.neural.hub.resolve_model`` finds), each with its defaults:

* ours: ``embedstack serve --model all-MiniLM-L6-v2=FOLDER@OPTIONS --host 127.0.0.1 --port P --truncate``
  (from .venv; OPTIONS by ``--precision``, see ``OURS_OPTIONS``: ``small_backend=onnx`` sends a query or a
  few through onnxruntime fp32, and for bf16 ``precision=bf16-pure,workers=2``); OpenAI-compatible ``POST /v1/embeddings``, ready when ``GET /ready`` answers 200. ``--truncate``
  (cut inputs at the model's 256 tokens) is the one setting named for a like-for-like run: the peer always
  truncates, our default refuses an over-long input with 400;
* the peer: ``infinity_emb v2 --model-id FOLDER --served-model-name all-MiniLM-L6-v2 --engine torch
  --device cpu --host 127.0.0.1 --port P`` (from .venv-infinity, ``HF_HUB_OFFLINE=1``, usage stats off);
  its OpenAI-compatible route is ``POST /embeddings`` (no ``/v1`` prefix unless ``--url-prefix``), ready
  when ``GET /health`` answers 200 (uvicorn binds after the model is loaded and warmed up). Its other
  settings are its defaults (``--precision bf16`` adds ``--dtype bfloat16``): batch size 32, fp32, dynamic batching, no BetterTransformer (optimum is not in
  its ``[server,torch]`` extras, so it runs the model through sentence-transformers), no disk cache. It
  needed no extra flag here (``INFINITY_EXTRA`` is empty). Build it with ``make peers-infinity``.

Threads: both servers keep their own defaults (torch's intra-op pool = the 2 cores); the idle one sleeps
while the other is measured (its CPU seconds during each run are recorded, ``idle_cpu_s``).

The load generator is this process (asyncio; each of the ``c`` client tasks has its own
``httpx.AsyncClient`` with one keep-alive connection, opened before the clock starts, because one shared
client's connection pool costs ~10 ms of CPU per request at c=128): the ``c`` clients share a fixed
number of requests, one input per request
(``{"input": TEXT, "model": "all-MiniLM-L6-v2"}``), each sent as soon as the client's previous answer
arrived (closed loop). Two workloads: ``short`` = STS-B sentences (test split first, then dev and train,
distinct, so that no text is sent twice and our query cache never answers), and ``scifact`` = BEIR SciFact
abstracts (title + text; both servers cut them at the model's 256 tokens).
For each (workload, concurrency) both servers run ``--reps`` times, alternating which goes first, on the
same texts (a different slice of the workload on each repetition); after a warm-up per server and
workload. Per run: embeddings/s (answered inputs / wall time from the first request to the last
answer), p50/p95/p99 latency (send to last byte, ms), errors (non-200 or transport error). Reported:
medians over repetitions with the min-max spread, ours/peer throughput (ratio of medians, and the spread
of the per-repetition ratios), p99 side by side. ``single``: one short sentence at a time with a 20 ms
pause between requests (the server otherwise idle), p50/p99 ms.
Before timing, the two servers' vectors are compared on short and long texts (min cosine, flagged in the
report below 0.999).

Part ``faults``: against our server only (started with ``--data-dir``): a client that disconnects
mid-request, malformed JSON, a 10 MB body, 100,000 inputs in one request, slow clients that send their
body a byte at a time while others are served, an unknown model, and SIGKILL during index additions
(acknowledged batches, kill at a random moment, restart, every acknowledged id must be found).

Results: ``serve_load`` (load) and ``serve_faults`` (faults) via benchmarks/_report.py; ``--quick`` is a
smoke run (small counts, no report written).

Usage: EMBEDSTACK_DATA_DIR=../shared/data .venv/bin/python benchmarks/serve_load.py
       [--part load|faults|all] [--quick] [--levels 1,8,32,128] [--reps 3]
       [--max-run-s 60] [--seed 0] [--quiet]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ROOT, cpu_line, last_results, machine, write_results, write_section  # noqa: E402

MODEL = "all-MiniLM-L6-v2"
OURS_BIN = ROOT / ".venv" / "bin"
INFINITY_BIN = ROOT / ".venv-infinity" / "bin"
# Flags the peer needs beyond its defaults on this machine: none (infinity-emb 0.0.78 starts as it is).
INFINITY_EXTRA: list[str] = []
# Requests per run at each concurrency; the whole default run (2 workloads x 4 levels x 3 reps x 2 servers)
# stays within about 15 minutes on 2 cores.
COUNTS = {"short": {1: 200, 8: 400, 32: 800, 128: 1024}, "scifact": {1: 40, 8: 80, 32: 160, 128: 320}}
QUICK_COUNTS = {"short": {1: 20, 8: 48, 32: 64}, "scifact": {1: 6, 8: 16, 32: 32}}


def log(quiet: bool, *msg: Any) -> None:
    if not quiet:
        print(f"[{time.strftime('%H:%M:%S')}]", *msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------------------ processes

def _children(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc)."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{d}/stat").read_text()
                parent[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += [c for c, pp in parent.items() if pp == p]
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in _children(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(f[11]) + int(f[12])) / tick
    return total


def rss_mb(pid: int) -> float:
    total = 0.0
    for p in _children(pid):
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
    return total


@dataclass
class Server:
    """A server subprocess: how to start it, where it answers, and its log."""

    name: str
    cmd: list[str]
    port: int
    embed_path: str
    ready_path: str
    env: dict[str, str] = field(default_factory=dict)
    logfile: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    startup_s: float = float("nan")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, logdir: Path, timeout: float = 600.0, quiet: bool = False) -> Server:
        import httpx

        self.logfile = logdir / f"{self.name}.log"
        fh = open(self.logfile, "ab")  # noqa: SIM115 (kept open by the child)
        env = {**os.environ, **self.env}
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT),
                                     start_new_session=True)
        fh.close()
        log(quiet, f"{self.name}: started pid {self.proc.pid}: {' '.join(self.cmd)}")
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before it was ready; "
                                   f"log {self.logfile}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + self.ready_path, timeout=2.0).status_code == 200:
                    break
            if time.perf_counter() - t0 > timeout:
                self.stop()
                raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s; log:\n{self.log_tail()}")
            time.sleep(0.25)
        self.startup_s = time.perf_counter() - t0
        log(quiet, f"{self.name}: ready in {self.startup_s:.1f} s at {self.url}")
        return self

    def log_tail(self, n: int = 40) -> str:
        if self.logfile is None or not self.logfile.is_file():
            return ""
        return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-n:])

    def kill(self) -> None:
        """SIGKILL the whole process group (no cleanup runs)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()


def model_folder() -> Path:
    from embedstack.neural.hub import resolve_model

    return Path(resolve_model(MODEL, download=False)[0]).resolve()


# --precision: what each server is given. fp32 (exact): ours sends a query or a few through onnxruntime
# (`small_backend=onnx`, fp32 like the rest), infinity keeps its fp32 default. bf16: the setting that
# helps both, given to both: ours `precision=bf16-pure` (a bf16 copy of the weights, two batches at a time on
# one thread each) and infinity `--dtype bfloat16` (it loads the weights in bf16).
# int8: each server's own int8 mode. Ours `precision=int8-token` (every Linear as int8 products with a scale per
# token, compiled, two batches at a time); infinity `--dtype int8` (on CPU: torch's quantize_dynamic of every
# Linear, one activation scale per batch). Their vectors differ from fp32 and from each other: each server's
# cosine to fp32 is reported beside its speed.
# fp32-bf16x3: float32 vectors from both; ours makes each linear product as three bf16 products on the AMX tiles
# (`precision=fp32-bf16x3`, float32 values throughout, products to 2^-16), infinity keeps its fp32 default. The
# vectors' agreement (min cosine) is in the table's text.
OURS_OPTIONS = {"fp32": "@small_backend=onnx", "bf16": "@precision=bf16-pure,workers=2,small_backend=onnx",
                "int8": "@precision=int8-token,compile=true,workers=2,small_backend=onnx",
                "fp32-bf16x3": "@precision=fp32-bf16x3,workers=2,small_backend=onnx"}
PEER_OPTIONS = {"fp32": [], "bf16": ["--dtype", "bfloat16"], "int8": ["--dtype", "int8"], "fp32-bf16x3": []}


def roofline_precision(precision: str) -> str:
    """The GEMM rate a run's ceiling is priced at: the peer's (fp32 for an fp32-bf16x3 run)."""
    return "fp32" if precision == "fp32-bf16x3" else precision


def ours_server(folder: Path, port: int, data_dir: Path | None = None, options: str = "") -> Server:
    exe = OURS_BIN / "embedstack"
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "embedstack.cli"]
    # --truncate: cut inputs at the model's 256 tokens as infinity (sentence-transformers) always does; our
    # default refuses over-long inputs with 400 (SciFact abstracts are longer)
    cmd += ["serve", "--model", f"{MODEL}={folder}{options}", "--host", "127.0.0.1", "--port", str(port), "--truncate"]
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
    return Server("ours", cmd, port, "/v1/embeddings", "/ready", env={"HF_HUB_OFFLINE": "1"})


def peer_server(kind: str, folder: Path, port: int, extra: list[str] | None = None) -> Server:
    if kind == "infinity":
        exe = INFINITY_BIN / "infinity_emb"
        if not exe.is_file():
            raise SystemExit(f"{exe} not found: build it with `make peers-infinity`.")
        cmd = [str(exe), "v2", "--model-id", str(folder), "--served-model-name", MODEL, "--engine", "torch",
               "--device", "cpu", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
               *INFINITY_EXTRA, *(extra or [])]
        env = {"HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1"}
        return Server("infinity", cmd, port, "/embeddings", "/health", env=env)
    raise SystemExit(f"unknown peer {kind!r}")


def peer_version(kind: str) -> dict[str, str]:
    code = ("import importlib.metadata as m, json\nout = {}\n"
            "for p in ('infinity_emb', 'torch', 'sentence-transformers', 'transformers', 'optimum', 'fastapi', "
            "'uvicorn', 'numpy'):\n"
            "    try: out[p] = m.version(p)\n"
            "    except m.PackageNotFoundError: pass\n"
            "print(json.dumps(out))")
    try:
        out = subprocess.run([str(INFINITY_BIN / "python"), "-c", code], capture_output=True, text=True, timeout=60)
        return json.loads(out.stdout)
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        return {"error": str(exc)}


# ------------------------------------------------------------------------------------------ workloads

def load_workloads() -> dict[str, list[str]]:
    """``short``: STS-B sentences, test split first, then dev and train (distinct sentences, so that no text
    is sent twice to a server in a default run: our server's query cache never hits); ``scifact``: abstracts."""
    from embedstack.data import load_beir, load_sts

    short: list[str] = []
    for split in ("test", "dev", "train"):
        with contextlib.suppress(Exception):
            sts = load_sts("stsb", split=split)
            short += [t.strip() for pair in zip(sts.s1, sts.s2, strict=True) for t in pair]
    short = list(dict.fromkeys(t for t in short if t))
    docs = list(dict.fromkeys(t for t in load_beir("scifact", split="train").doc_texts() if t))
    longest = set(sorted(docs, key=len)[-4:])  # kept in the reserve: the agreement check covers truncation
    docs = [d for d in docs if d not in longest] + [d for d in docs if d in longest]
    return {"short": short, "scifact": docs}


class Texts:
    """Hands out consecutive slices of a workload; the last 64 texts are kept for warm-up and checks."""

    def __init__(self, texts: list[str]) -> None:
        self.texts, self.pos, self.wrapped = texts, 0, False

    @property
    def reserve(self) -> list[str]:
        return self.texts[-64:]

    def take(self, n: int) -> list[str]:
        usable = len(self.texts) - 64
        if self.pos + n > usable:
            self.wrapped = True
        out = [self.texts[(self.pos + i) % usable] for i in range(n)]
        self.pos += n
        return out


def body(text: str | list[str]) -> dict[str, Any]:
    return {"input": text, "model": MODEL}


# ------------------------------------------------------------------------------------------ load part

async def run_load(server: Server, texts: Sequence[str], concurrency: int, n_requests: int,
                   max_s: float, pause_s: float = 0.0) -> dict[str, Any]:
    """``concurrency`` closed-loop clients share ``n_requests`` one-input requests (text i of ``texts``).

    Each client has its own ``httpx.AsyncClient`` holding one keep-alive connection, opened before the clock
    starts: one client shared by 128 tasks spends most of a core in its connection pool (measured: 10 ms of
    client CPU per request at c=128 against 1.7 ms at c=8), and the load generator, not the server, would be
    measured."""
    import httpx

    lat: list[float] = []
    errors: list[str] = []
    state: dict[str, Any] = {"ok": 0, "next": 0, "stop_at": float("inf")}
    go = asyncio.Event()
    connected: list[int] = []

    async def worker() -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=httpx.Timeout(300.0)) as client:
            await client.get(server.ready_path)  # connect now: connection setup is not timed
            connected.append(1)
            await go.wait()
            while state["next"] < n_requests and time.perf_counter() < state["stop_at"]:
                i = state["next"]
                state["next"] += 1
                t0 = time.perf_counter()
                try:
                    r = await client.post(server.embed_path, json=body(texts[i % len(texts)]))
                    dt = time.perf_counter() - t0
                    if r.status_code == 200 and len(r.json()["data"]) == 1:
                        state["ok"] += 1
                        lat.append(dt)
                    else:
                        errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
                if pause_s:
                    await asyncio.sleep(pause_s)

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    while len(connected) < concurrency and not any(t.done() for t in tasks):
        await asyncio.sleep(0.01)
    cpu0 = cpu_seconds(server.pid)
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    state["stop_at"] = t0 + max_s
    go.set()
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu1 = cpu_seconds(server.pid)
    ok, nxt = state["ok"], state["next"]
    ms = np.asarray(lat) * 1000
    pct = (lambda q: float(np.percentile(ms, q))) if len(ms) else (lambda q: float("nan"))
    return {"requests": nxt, "ok": ok, "errors": len(errors), "error_samples": sorted(set(errors))[:3],
            "cut_by_time": nxt < n_requests, "wall_s": wall, "emb_per_s": ok / wall if wall else float("nan"),
            "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99), "max_ms": float(ms.max()) if len(ms) else float("nan"),
            "server_cpu_s": cpu1 - cpu0,
            "client_cpu_s": (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)}


def embed_sync(server: Server, texts: list[str]) -> np.ndarray:
    import httpx

    r = httpx.post(server.url + server.embed_path, json=body(texts), timeout=300)
    r.raise_for_status()
    data = sorted(r.json()["data"], key=lambda d: d["index"])
    return np.asarray([d["embedding"] for d in data], dtype=np.float64)


def agreement(a: Server, b: Server, workloads: dict[str, list[str]]) -> dict[str, float]:
    """Smallest cosine between the two servers' vectors of the same texts, per workload."""
    out = {}
    for name, texts in workloads.items():
        picked = texts[-20:]  # reserve texts (not those of the timed runs); for scifact the 4 longest abstracts
        x, y = embed_sync(a, picked), embed_sync(b, picked)
        cos = (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
        out[name] = float(cos.min())
    return out


def vs_fp32(servers: tuple[Server, ...], workloads: dict[str, list[str]], folder: Path,
            n: int = 100) -> dict[str, dict[str, dict[str, float]]]:
    """Each server's cosine to fp32 vectors (embedstack in this process, fp32, cut at 256 tokens like both servers)
    on ``n`` texts per workload taken from the end (not those of the timed runs): mean and min."""
    import warnings

    import embedstack

    ref_model = embedstack.load(MODEL, precision="fp32")
    out: dict[str, dict[str, dict[str, float]]] = {s.name: {} for s in servers}
    for name, texts in workloads.items():
        picked = texts[-n:]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the abstracts over 256 tokens are cut, as the servers cut them
            ref = ref_model.encode(picked).astype(np.float64)
        ref /= np.linalg.norm(ref, axis=1, keepdims=True)
        for s in servers:
            x = embed_sync(s, picked)
            cos = (x * ref).sum(1) / np.linalg.norm(x, axis=1)
            out[s.name][name] = {"mean": float(cos.mean()), "min": float(cos.min())}
    return out


def cache_counts(server: Server) -> dict[str, float]:
    """Our query cache's hits and misses, from /metrics (Prometheus text)."""
    import httpx

    out: dict[str, float] = {}
    with contextlib.suppress(httpx.HTTPError):
        for line in httpx.get(server.url + "/metrics", timeout=10).text.splitlines():
            for key in ("embedstack_cache_hits", "embedstack_cache_misses"):
                if line.startswith(key) and not line.startswith(key + "_created"):
                    out[key.rsplit("_", 1)[1]] = out.get(key.rsplit("_", 1)[1], 0.0) + float(line.split()[-1])
    return out


def summarize(runs: list[dict[str, Any]], names: tuple[str, str]) -> list[dict[str, Any]]:
    """One row per (workload, concurrency): medians and spreads of each server, and ours/peer."""
    ours, peer = names
    rows = []
    order = {"short": 0, "scifact": 1, "single": 2}
    keys = sorted({(r["workload"], r["concurrency"]) for r in runs}, key=lambda k: (order.get(k[0], 3), k))
    for wl, c in keys:
        row: dict[str, Any] = {"workload": wl, "concurrency": c}
        for who in names:
            rs = [r for r in runs if r["workload"] == wl and r["concurrency"] == c and r["server"] == who]
            for m in ("emb_per_s", "p50_ms", "p95_ms", "p99_ms"):
                vals = [r[m] for r in rs]
                row[f"{who}_{m}"] = statistics.median(vals)
                row[f"{who}_{m}_min"], row[f"{who}_{m}_max"] = min(vals), max(vals)
            row[f"{who}_errors"] = sum(r["errors"] for r in rs)
            row[f"{who}_cut"] = any(r["cut_by_time"] for r in rs)
        row["ratio"] = row[f"{ours}_emb_per_s"] / row[f"{peer}_emb_per_s"]
        paired = []
        for rep in sorted({r["rep"] for r in runs if r["workload"] == wl and r["concurrency"] == c}):
            pr = {r["server"]: r["emb_per_s"] for r in runs
                  if r["workload"] == wl and r["concurrency"] == c and r["rep"] == rep}
            if ours in pr and peer in pr and pr[peer]:
                paired.append(pr[ours] / pr[peer])
        row["ratio_min"], row["ratio_max"] = (min(paired), max(paired)) if paired else (float("nan"),) * 2
        rows.append(row)
    return rows


def roofline(folder: Path, workloads: dict[str, list[str]], threads: int, precision: str = "fp32") -> dict[str, Any]:
    """What the CPU allows (measured before the servers start): the forward FLOPs of each workload's texts as both
    servers cut them (256 tokens), GEMM at the model's layer shapes in the run's precision (fp32, or bf16 for a
    ``--precision bf16`` run) and the read bandwidth, and from them the embeddings/s a server would reach if every
    FLOP ran at that rate (tokenization, HTTP and the rest only add time)."""
    import torch
    from tokenizers import Tokenizer

    from embedstack.neural.config import BertConfig
    from encode import model_flops
    from rerank_speed import hardware_roofline

    config = BertConfig.from_json_file(folder / "config.json")
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.enable_truncation(max_length=256)
    tok.no_padding()  # the folder's tokenizer.json pads to 128; FLOPs count real tokens
    torch.set_num_threads(threads)
    out: dict[str, Any] = {"hw": hardware_roofline(config, threads), "workloads": {}, "precision": precision}
    if precision in ("bf16", "int8"):
        from encode import gemm_rate

        dtype = torch.bfloat16 if precision == "bf16" else torch.int8
        out["hw"][f"{precision}_layer_gflops"] = gemm_rate(config, dtype) / 1e9
    rate = out["hw"][f"{precision}_layer_gflops"]
    for wl, texts in workloads.items():
        lengths = np.array([len(e.ids) for e in tok.encode_batch(texts[:2000])])
        gflop = float(model_flops(lengths, config).mean()) / 1e9
        out["workloads"][wl] = {"mean_tokens": float(lengths.mean()), "gflop_per_text": gflop,
                                "ceiling_emb_per_s": rate / gflop}
    return out


def part_load(opts: argparse.Namespace, workloads: dict[str, list[str]], folder: Path, logdir: Path) -> dict[str, Any]:
    q = opts.quiet
    counts = QUICK_COUNTS if opts.quick else COUNTS
    levels = [int(x) for x in opts.levels.split(",")] if opts.levels else sorted(counts["short"])
    ours = ours_server(folder, free_port(), options=OURS_OPTIONS[opts.precision])
    peer = peer_server(opts.peer, folder, free_port(), PEER_OPTIONS[opts.precision])
    runs: list[dict[str, Any]] = []
    res: dict[str, Any] = {"part": "load", "quick": opts.quick, "precision": opts.precision, "peer": opts.peer, "peer_versions": peer_version(opts.peer),
                           "model_folder": str(folder), "reps": opts.reps, "levels": levels,
                           "counts": {wl: {c: counts[wl].get(c, counts[wl][max(counts[wl])]) for c in levels}
                                      for wl in counts},
                           "texts": {k: len(v) for k, v in workloads.items()}, "loadavg_start": os.getloadavg(),
                           "servers": {}, "cpu": cpu_line()}
    if not opts.quick:
        res["roofline"] = roofline(folder, workloads, threads=os.cpu_count() or 1,
                                   precision=roofline_precision(opts.precision))
        log(q, f"roofline: {res['roofline']}")
    try:
        for s in (ours, peer):  # one at a time: startup is timed alone
            s.start(logdir, quiet=q)
        res["servers"] = {s.name: {"cmd": s.cmd, "env": s.env, "startup_s": s.startup_s, "embed_path": s.embed_path}
                          for s in (ours, peer)}
        res["min_cosine"] = agreement(ours, peer, workloads)
        log(q, f"agreement (min cosine ours vs {peer.name}): {res['min_cosine']}")
        if opts.precision == "int8":
            res["vs_fp32"] = vs_fp32((ours, peer), workloads, folder)
            log(q, f"cosine to fp32: {res['vs_fp32']}")
        servers = (ours, peer)
        pools = {wl: Texts(texts) for wl, texts in workloads.items()}
        timed_hits = 0.0
        for wl, pool in pools.items():
            for s in servers:  # warm-up: allocations, first batches of each shape
                asyncio.run(run_load(s, pool.reserve, 8, 32 if wl == "short" else 16, 60))
            for li, c in enumerate(levels):
                n = res["counts"][wl][c]
                for rep in range(opts.reps):
                    order = servers if (rep + li) % 2 == 0 else servers[::-1]
                    chunk = pool.take(n)
                    for first, s in enumerate(order):
                        other = order[1 - first]
                        idle0 = cpu_seconds(other.pid)
                        hits0 = cache_counts(s).get("hits", 0.0) if s is ours else 0.0
                        r = asyncio.run(run_load(s, chunk, c, n, opts.max_run_s))
                        if s is ours:
                            timed_hits += cache_counts(s).get("hits", 0.0) - hits0
                        r.update(server=s.name, workload=wl, concurrency=c, rep=rep, first=first == 0,
                                 idle_cpu_s=cpu_seconds(other.pid) - idle0)
                        runs.append(r)
                        log(q, f"{wl:8s} c={c:<4d} rep {rep} {s.name:10s} {r['emb_per_s']:8.1f} emb/s  p50 "
                               f"{r['p50_ms']:7.1f}  p99 {r['p99_ms']:7.1f} ms  errors {r['errors']}"
                               f"{'  CUT BY TIME' if r['cut_by_time'] else ''}")
        # one short sentence alone: sequential, a pause between requests so the server is idle
        n_single = 20 if opts.quick else 100
        for rep in range(opts.reps):
            chunk = pools["short"].take(n_single)
            for first, s in enumerate(servers if rep % 2 == 0 else servers[::-1]):
                r = asyncio.run(run_load(s, chunk, 1, n_single, opts.max_run_s, pause_s=0.02))
                r.update(server=s.name, workload="single", concurrency=1, rep=rep, first=first == 0, idle_cpu_s=0.0)
                runs.append(r)
                log(q, f"single   rep {rep} {s.name:10s} p50 {r['p50_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms")
        res["texts_repeated"] = {wl: pool.wrapped for wl, pool in pools.items()}
        res["ours_cache"] = {**cache_counts(ours), "hits_in_timed_runs": timed_hits}
        res["rss_mb_end"] = {s.name: rss_mb(s.pid) for s in servers}
    finally:
        for s in (ours, peer):
            s.stop()
    res["loadavg_end"] = os.getloadavg()
    res["runs"] = runs
    res["rows"] = summarize(runs, (ours.name, peer.name))
    res["peer_name"] = peer.name
    return res


def md_roofline(res: dict[str, Any]) -> list[str]:
    """Each workload's ceiling, and the share of it each server reached at its best concurrency."""
    p, roof = res["peer_name"], res["roofline"]
    hw = roof["hw"]
    prec = roof.get("precision", "fp32")  # records before the bf16 rate was measured priced bf16 runs at fp32
    after = roof.get("rate_measured_after")
    when = (f" (measured after the load runs, on the same CPU, idle{'' if after is True else f', {after}'})"
            if after else "")
    lines = [f"How much room the hardware leaves: the {prec} ceiling is the embeddings/s at which every FLOP of the "
             f"forward pass (real tokens, cut at 256) runs at the rate measured for the model's own linear layers "
             f"in {prec} on 8,192 tokens, {hw[f'{prec}_layer_gflops']:.0f} GFLOP/s{when} ({hw['threads']} threads; "
             f"read bandwidth {hw.get('read_gbs', float('nan')):.0f} GB/s). Tokenization, HTTP, attention's "
             f"element-wise work, GELU and LayerNorm only add time, so ceiling / {p} bounds any {prec} speed-up"
             + (" that keeps float32 products (ours makes each as three bf16 products on the AMX tiles, which this "
                "ceiling does not bound)." if res.get("precision") == "fp32-bf16x3" else "."), "",
             f"| workload | mean tokens | GFLOP / text | {prec} ceiling emb/s | ours best emb/s (of ceiling) | "
             f"{p} best emb/s (of ceiling) | largest possible {prec} ours / {p} |", "|---|---:|---:|---:|---:|---:|---:|"]
    for wl, w in roof["workloads"].items():
        rows = [r for r in res["rows"] if r["workload"] == wl]
        if not rows:
            continue
        best = {s: max(r[f"{s}_emb_per_s"] for r in rows) for s in ("ours", p)}
        ceil = w["ceiling_emb_per_s"]
        lines.append(f"| {wl} | {w['mean_tokens']:.1f} | {w['gflop_per_text']:.3f} | {ceil:.0f} | "
                     f"{best['ours']:.1f} ({100 * best['ours'] / ceil:.0f}%) | {best[p]:.1f} ({100 * best[p] / ceil:.0f}%) "
                     f"| {ceil / best[p]:.2f}× |")
    return lines


def md_load(res: dict[str, Any]) -> str:
    p = res["peer_name"]
    pv = res["peer_versions"]
    ver = ", ".join(f"{k} {v}" for k, v in pv.items())
    cos = ", ".join(f"{k} {v:.6f}" for k, v in res.get("min_cosine", {}).items())
    if res.get("vs_fp32"):  # int8: each server's own quantization; each one's distance to fp32 instead
        cos += (" (each server's own int8 quantization). Cosine to fp32 vectors (embedstack fp32 in the load "
                "generator's process, same 256-token cut), mean / min over 100 texts per workload not used in the "
                "timed runs: " + "; ".join(f"{s}: " + ", ".join(f"{wl} {v['mean']:.5f} / {v['min']:.4f}"
                                                                  for wl, v in per.items())
                                              for s, per in res["vs_fp32"].items()))
    elif any(v < 0.999 for v in res.get("min_cosine", {}).values()):
        cos += " (**below 0.999: the two servers do not compute the same vectors**)"
    def shown(cmd: list[str]) -> str:
        out = " ".join(Path(cmd[0]).name if i == 0 else c for i, c in enumerate(cmd) if c != "--port" and
                       (i == 0 or cmd[i - 1] != "--port"))
        return out.replace(res["model_folder"], "FOLDER")

    loaded = [r for r in res["runs"] if r["workload"] != "single"]
    client = max((r["client_cpu_s"] / r["wall_s"] for r in loaded), default=float("nan"))
    idle = max((r["idle_cpu_s"] / r["wall_s"] for r in loaded), default=float("nan"))
    cache = res.get("ours_cache", {})
    wrapped = [wl for wl, w in res.get("texts_repeated", {}).items() if w]
    repeats = f"texts of {', '.join(wrapped)} repeat across runs" if wrapped else "no text is sent twice"
    prec = res.get("precision", "fp32")
    flag = "" if prec == "fp32" else f" --precision {prec}"
    suffix = res.get("section_suffix", "")
    flag += f" --section-suffix {suffix}" if suffix else ""
    on = f" — {res.get('cpu', '?')}" if suffix else ""
    lines = [f"## HTTP serving under load: `embedstack serve` vs {p} ({prec}){on}", "",
             f"`EMBEDSTACK_DATA_DIR=../shared/data .venv/bin/python benchmarks/serve_load.py{flag}` — all-MiniLM-L6-v2 "
             f"(FOLDER: the same local folder for both), one input per request (`short`: STS-B sentences; "
             f"`scifact`: SciFact abstracts, title + text, cut at 256 tokens by both), closed-loop clients "
             f"(asyncio, one httpx client and keep-alive connection each) in a third process, loopback, "
             f"{res.get('machine', {}).get('cpus') or os.cpu_count()} cores shared by all three ({res.get('cpu', 'CPU not recorded')}). "
             f"Ours: `{shown(res['servers']['ours']['cmd'])}`; {p}: `{shown(res['servers'][p]['cmd'])}` "
             f"({ver}). Everything else at each server's defaults (threads included); `--truncate` makes ours cut "
             f"over-long inputs as {p} always does (our default refuses them). Medians of {res['reps']} interleaved "
             f"repetitions (alternating which server goes first, both on the same texts; {repeats}: our query "
             f"cache had {cache.get('hits_in_timed_runs', 0):.0f} hits in the timed runs), min–max in brackets. Vectors agree: min "
             f"cosine {cos}. The load generator used at most {100 * client:.0f}% of a core, the idle server at most "
             f"{100 * idle:.0f}%. Load average (1 min) at start {res['loadavg_start'][0]:.2f}, at end "
             f"{res['loadavg_end'][0]:.2f}.", "",
             f"| workload | clients | requests | ours emb/s | {p} emb/s | ours / {p} | ours p50 / p95 / p99 ms | "
             f"{p} p50 / p95 / p99 ms | errors (ours / {p}) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        if r["workload"] == "single":
            continue
        n = res["counts"][r["workload"]][r["concurrency"]]

        def thr(w: str, r: dict[str, Any] = r) -> str:
            return f"{r[f'{w}_emb_per_s']:.1f} ({r[f'{w}_emb_per_s_min']:.0f}–{r[f'{w}_emb_per_s_max']:.0f})"

        def lat(w: str, r: dict[str, Any] = r) -> str:
            return (f"{r[f'{w}_p50_ms']:.0f} / {r[f'{w}_p95_ms']:.0f} / **{r[f'{w}_p99_ms']:.0f}** "
                    f"({r[f'{w}_p99_ms_min']:.0f}–{r[f'{w}_p99_ms_max']:.0f})")

        cut = " (cut by time)" if r["ours_cut"] or r[f"{p}_cut"] else ""
        lines.append(f"| {r['workload']} | {r['concurrency']} | {n}{cut} | {thr('ours')} | {thr(p)} | "
                     f"**{r['ratio']:.2f}×** ({r['ratio_min']:.2f}–{r['ratio_max']:.2f}) | {lat('ours')} | {lat(p)} | "
                     f"{r['ours_errors']} / {r[f'{p}_errors']} |")
    single = [r for r in res["rows"] if r["workload"] == "single"]
    if single:
        s = single[0]
        lines += ["", f"One short sentence alone (sequential, 20 ms between requests): p50 ours "
                      f"{s['ours_p50_ms']:.1f} ms ({s['ours_p50_ms_min']:.1f}–{s['ours_p50_ms_max']:.1f}), {p} "
                      f"{s[f'{p}_p50_ms']:.1f} ms ({s[f'{p}_p50_ms_min']:.1f}–{s[f'{p}_p50_ms_max']:.1f}); p99 ours "
                      f"{s['ours_p99_ms']:.1f} ms, {p} {s[f'{p}_p99_ms']:.1f} ms."]
    if "roofline" in res:
        lines += ["", *md_roofline(res)]
    st = res["servers"]
    lines += ["", f"Startup to ready: ours {st['ours']['startup_s']:.1f} s, {p} {st[p]['startup_s']:.1f} s; resident "
                  f"memory at the end: ours {res['rss_mb_end']['ours']:.0f} MB, {p} {res['rss_mb_end'][p]:.0f} MB."]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ faults part

def _post_timed(url: str, payload: bytes, *, timeout: float) -> tuple[str, int | None, str, float]:
    """POST raw JSON bytes: (brief answer, status or None on a transport error, body, seconds)."""
    import httpx

    t0 = time.perf_counter()
    try:
        r = httpx.post(url, content=payload, headers={"Content-Type": "application/json"}, timeout=timeout)
        got, status, text = _brief(r.status_code, r.text), r.status_code, r.text
    except httpx.HTTPError as exc:
        got, status, text = f"transport error {type(exc).__name__}: {exc}"[:200], None, ""
    return got, status, text, time.perf_counter() - t0


async def raw_request(port: int, method: str, path: str, payload: bytes, *, headers: dict[str, str] | None = None,
                      byte_delay: float = 0.0, close_after: float | None = None,
                      read_timeout: float = 120.0) -> tuple[int | None, bytes, float]:
    """One HTTP/1.1 request on a fresh socket; returns (status or None, body head, seconds)."""
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    hdr = {"Host": f"127.0.0.1:{port}", "Content-Type": "application/json", "Content-Length": str(len(payload)),
           "Connection": "close", **(headers or {})}
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdr.items()) + "\r\n"
    try:
        writer.write(head.encode())
        if byte_delay:
            for i in range(len(payload)):
                writer.write(payload[i:i + 1])
                await writer.drain()
                await asyncio.sleep(byte_delay)
        else:
            writer.write(payload)
            await writer.drain()
        if close_after is not None:
            await asyncio.sleep(close_after)
            return None, b"", time.perf_counter() - t0
        data = await asyncio.wait_for(reader.read(), read_timeout)
    except (ConnectionError, asyncio.TimeoutError) as exc:
        return None, f"{type(exc).__name__}".encode(), time.perf_counter() - t0
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    status = None
    with contextlib.suppress(ValueError, IndexError):
        status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[-1][:300], time.perf_counter() - t0


def _brief(status: int | None, text: str) -> str:
    """``STATUS code: message`` of a JSON error body (or the body's head)."""
    try:
        e = json.loads(text)["error"]
        return f"{status} {e.get('code')}: {str(e.get('message'))[:110]}"
    except (ValueError, KeyError, TypeError):
        return f"{status} {text[:120]}"


def _err_shape(text: str) -> bool:
    try:
        e = json.loads(text)["error"]
        return isinstance(e, dict) and isinstance(e.get("message"), str) and "type" in e and "code" in e
    except (ValueError, KeyError, TypeError):
        return False


def wait_idle(server: Server, max_s: float = 300.0) -> float:
    """Wait until the server uses < 5% of a core over 1 s; returns the seconds waited."""
    t0 = time.perf_counter()
    last = cpu_seconds(server.pid)
    while time.perf_counter() - t0 < max_s:
        time.sleep(1.0)
        now = cpu_seconds(server.pid)
        if now - last < 0.05:
            break
        last = now
    return time.perf_counter() - t0


def probe(server: Server) -> tuple[bool, float]:
    """Does the server still answer an ordinary embeddings request? (ok, ms)"""
    import httpx

    t0 = time.perf_counter()
    try:
        r = httpx.post(server.url + server.embed_path, json=body("is the server still there"), timeout=60)
        return r.status_code == 200, (time.perf_counter() - t0) * 1000
    except httpx.HTTPError:
        return False, (time.perf_counter() - t0) * 1000


def part_faults(opts: argparse.Namespace, workloads: dict[str, list[str]], folder: Path,
                logdir: Path) -> dict[str, Any]:
    import httpx

    q = opts.quiet
    rng = random.Random(opts.seed)
    data_dir = Path(tempfile.mkdtemp(prefix="serve-faults-data-"))
    port = free_port()
    srv = ours_server(folder, port, data_dir=data_dir)
    rows: list[dict[str, Any]] = []

    def add(fault: str, expected: str, got: str, ok: bool, **extra: Any) -> None:
        alive, ms = probe(srv)
        wait_idle(srv)  # the next fault starts on an idle server
        rows.append({"fault": fault, "expected": expected, "got": got, "ok": bool(ok and alive),
                     "serving_after": alive, "probe_ms": ms, **extra})
        log(q, f"fault {fault}: {got} -> {'ok' if ok and alive else 'NOT OK'} (serving after: {alive}, {ms:.0f} ms)")

    res: dict[str, Any] = {"part": "faults", "quick": opts.quick, "seed": opts.seed, "model_folder": str(folder),
                           "loadavg_start": os.getloadavg()}
    try:
        srv.start(logdir, quiet=q)
        path = srv.embed_path
        # 6 distinct blocks of 64 long abstracts (distinct: our query cache must not answer any of them)
        blocks = [workloads["scifact"][i * 64:(i + 1) * 64] for i in range(6)]

        # 1. client disconnects mid-request: a 64-abstract request closed after 100 ms, 5 times in a row.
        # A complete request of the same size is timed first (server CPU): the CPU the 5 abandoned ones cost,
        # divided by it, says how many the server computed anyway.
        cpu0 = cpu_seconds(srv.pid)
        httpx.post(srv.url + path, json=body(blocks[0]), timeout=300).raise_for_status()
        one_cpu = cpu_seconds(srv.pid) - cpu0

        async def disconnects() -> None:
            for blk in blocks[1:]:
                await raw_request(port, "POST", path, json.dumps(body(blk)).encode(), close_after=0.1)

        cpu0 = cpu_seconds(srv.pid)
        t0 = time.perf_counter()
        asyncio.run(disconnects())
        ok1, ms1 = probe(srv)
        wait_idle(srv)
        busy_s = time.perf_counter() - t0 - 1.0  # less the idle second that ended the wait
        spent = cpu_seconds(srv.pid) - cpu0
        add("client disconnects mid-request (5× a 64-abstract request, closed after 100 ms)",
            "keeps serving; abandoned work dropped",
            f"next request {'200' if ok1 else 'FAILED'} after {ms1:.0f} ms; busy {busy_s:.1f} s, server CPU {spent:.1f} s "
            f"≈ {spent / one_cpu:.1f} × one such request ({one_cpu:.1f} s): abandoned requests "
            f"{'computed anyway' if spent / one_cpu > 2.5 else 'mostly dropped'}",
            ok1 and spent / one_cpu <= 2.5, next_request_ms=ms1, server_cpu_s=spent, one_request_cpu_s=one_cpu,
            busy_s=busy_s)

        # 2. malformed JSON
        r = httpx.post(srv.url + path, content=b'{"input": ["a", ', headers={"Content-Type": "application/json"},
                       timeout=30)
        add("malformed JSON", "400 + JSON error body", _brief(r.status_code, r.text),
            r.status_code == 400 and _err_shape(r.text), status=r.status_code, body=r.text[:300])

        # 3. a 10 MB body
        big = b'{"model": "' + MODEL.encode() + b'", "input": "' + b"a " * (5 * 1024 * 1024) + b'"}'
        got, status, text, dt = _post_timed(srv.url + path, big, timeout=120)
        add("10 MB body", "413 + JSON error body", f"{got} ({dt * 1000:.0f} ms)", status == 413 and _err_shape(text),
            status=status, seconds=dt)

        # 4. 100,000 inputs in one request
        rss0 = rss_mb(srv.pid)
        payload = json.dumps(body(["the cat sat on the mat"] * 100_000)).encode()
        got, status, text, dt = _post_timed(srv.url + path, payload, timeout=300)
        drss = rss_mb(srv.pid) - rss0
        add(f"100,000 inputs in one request ({len(payload) / 1e6:.1f} MB)", "400/413 within 1 s, no memory growth",
            f"{got} ({dt * 1000:.0f} ms, RSS {drss:+.0f} MB)", status in (400, 413) and dt < 1.0 and _err_shape(text),
            status=status, seconds=dt, rss_delta_mb=drss)

        # 5. slow clients: 4 sockets send a body one byte per 100 ms while a fifth client sends ordinary requests
        async def slow() -> tuple[list[tuple[int | None, bytes, float]], list[float], int]:
            import httpx as hx

            payload = json.dumps(body("slow client sentence")).encode()
            slow_tasks = [asyncio.create_task(raw_request(port, "POST", path, payload, byte_delay=0.1))
                          for _ in range(4)]
            lat, bad = [], 0
            async with hx.AsyncClient(base_url=srv.url, timeout=60) as client:
                t_end = time.perf_counter() + len(payload) * 0.1
                while time.perf_counter() < t_end:
                    t0 = time.perf_counter()
                    try:
                        rr = await client.post(path, json=body(rng.choice(workloads["short"])))
                        bad += rr.status_code != 200
                    except hx.HTTPError:
                        bad += 1
                    lat.append((time.perf_counter() - t0) * 1000)
                    await asyncio.sleep(0.05)
            return await asyncio.gather(*slow_tasks), lat, bad

        slow_res, lat, bad = asyncio.run(slow())
        statuses = [s for s, _, _ in slow_res]
        add("4 slow clients (body 1 byte / 100 ms, ~5 s each)", "others still served",
            f"{len(lat)} ordinary requests meanwhile, {bad} failed, p50 {np.median(lat):.0f} ms, max {max(lat):.0f} ms; "
            f"slow clients got {statuses}", bad == 0 and max(lat) < 2000, others_p50_ms=float(np.median(lat)),
            others_max_ms=float(max(lat)), slow_statuses=statuses)

        # 6. an unknown model name
        r = httpx.post(srv.url + path, json={"input": "x", "model": "no-such-model"}, timeout=30)
        add("unknown model", "404 (or 400) + JSON error body", _brief(r.status_code, r.text),
            r.status_code in (400, 404) and _err_shape(r.text), status=r.status_code)

        # 7. SIGKILL during index additions, restart, every acknowledged id present
        rows.append(kill_during_add(srv, workloads["short"], rng, trials=1 if opts.quick else 3, logdir=logdir, quiet=q))
    finally:
        srv.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    res["loadavg_end"] = os.getloadavg()
    res["rows"] = rows
    return res


async def _add_until_killed(srv: Server, name: str, sentences: list[str], next_id: int, kill_at: float,
                            acked: dict[str, str], detail: list[str]) -> tuple[int, list[str]]:
    """Add batches of 16 documents until the server is SIGKILLed ``kill_at`` s from now; returns (next id,
    ids of the batch in flight at the kill). Acknowledged (200) batches go into ``acked``."""
    import httpx

    state: dict[str, Any] = {"stop": False, "next": next_id, "in_flight": []}

    async def adder() -> None:
        async with httpx.AsyncClient(base_url=srv.url, timeout=60) as client:
            while not state["stop"]:
                docs = []
                for _ in range(16):
                    did = f"d{state['next']}"
                    docs.append({"id": did, "text": f"{did}: {sentences[state['next'] % len(sentences)]}"})
                    state["next"] += 1
                state["in_flight"] = [d["id"] for d in docs]
                try:
                    rr = await client.post(f"/v1/indexes/{name}/documents", json={"documents": docs})
                except httpx.HTTPError:
                    return
                if rr.status_code == 200:
                    acked.update({d["id"]: d["text"] for d in docs})
                    state["in_flight"] = []
                else:
                    detail.append(f"add answered {rr.status_code} {rr.text[:100]}")
                    return

    async def killer() -> None:
        await asyncio.sleep(kill_at)
        srv.kill()
        state["stop"] = True

    await asyncio.wait_for(asyncio.gather(adder(), killer()), 120)
    return state["next"], state["in_flight"]


def kill_during_add(srv: Server, sentences: list[str], rng: random.Random, *, trials: int, logdir: Path,
                    quiet: bool) -> dict[str, Any]:
    import httpx

    name = "killtest"
    r = httpx.post(srv.url + "/v1/indexes", json={"name": name, "model": MODEL, "index": "flat"}, timeout=60)
    if r.status_code not in (200, 201):
        return {"fault": "SIGKILL during index add, restart", "expected": "every acknowledged id present",
                "got": f"could not create the index: {r.status_code} {r.text[:200]}", "ok": False}
    acked: dict[str, str] = {}
    in_flight: list[str] = []
    next_id, count = 0, None
    detail: list[str] = []
    for trial in range(trials):
        kill_at = rng.uniform(0.5, 3.0)
        next_id, in_flight = asyncio.run(_add_until_killed(srv, name, sentences, next_id, kill_at, acked, detail))
        t0 = time.perf_counter()
        srv.start(logdir, quiet=quiet)
        restart_s = time.perf_counter() - t0
        info = httpx.get(srv.url + "/v1/indexes", timeout=30).json()
        count = next((d.get("count") for d in info.get("data", []) if d.get("name") == name), None)
        detail.append(f"trial {trial}: killed at {kill_at:.2f} s, {len(acked)} acknowledged so far, "
                      f"in flight {len(in_flight)}, count after restart {count}, ready in {restart_s:.1f} s")
        log(quiet, detail[-1])
    missing = []
    for did, text in acked.items():
        rr = httpx.post(srv.url + "/v1/search", json={"query": text, "index": name, "k": 3}, timeout=60)
        ids = [h["id"] for h in rr.json().get("hits", [])] if rr.status_code == 200 else []
        if did not in ids:
            missing.append(did)
    ok = not missing and count is not None and len(acked) <= count <= len(acked) + 16 * trials
    return {"fault": f"SIGKILL during index add (batches of 16, {trials} kill(s) at a random moment), restart",
            "expected": "every acknowledged id present", "ok": ok,
            "got": f"{len(acked)} acknowledged, {len(acked) - len(missing)} found by search, count {count}"
                   + (f"; missing {missing[:10]}" if missing else ""),
            "acknowledged": len(acked), "missing": missing[:50], "count": count, "detail": detail}


def md_faults(res: dict[str, Any]) -> str:
    lines = ["## HTTP serving: faults (`embedstack serve`)", "",
             "`.venv/bin/python benchmarks/serve_load.py --part faults` — our server alone, all-MiniLM-L6-v2, "
             "loopback. After each fault an ordinary request is sent (`serving after`).", "",
             "| fault | expected | got | serving after | ok |", "|---|---|---|---|---|"]
    for r in res["rows"]:
        got = str(r["got"]).replace("|", "\\|").replace("\n", " ")
        serving = "yes" if r.get("serving_after", True) else "**no**"
        lines.append(f"| {r['fault']} | {r['expected']} | {got} | {serving} | {'✓' if r['ok'] else '✗'} |")
    details = [d for r in res["rows"] for d in r.get("detail", [])]
    if details:
        lines += ["", *(f"- {d}" for d in details)]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ main

def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=["load", "faults", "all"], default="load")
    ap.add_argument("--quick", action="store_true", help="smoke run: small counts, levels 1,8,32, no report")
    ap.add_argument("--levels", default=None, help="comma-separated client counts (default 1,8,32,128)")
    ap.add_argument("--reps", type=int, default=None, help="interleaved repetitions (default 3; quick 2)")
    ap.add_argument("--peer", choices=["infinity"], default="infinity")
    ap.add_argument("--max-run-s", type=float, default=60.0, help="a run stops issuing requests after this")
    ap.add_argument("--precision", choices=["fp32", "fp32-bf16x3", "bf16", "int8"], default="fp32",
                    help="fp32: both exact (infinity's default); fp32-bf16x3: infinity fp32, ours float32 with its "
                         "products as three bf16 ones on AMX (results: serve_load_fp32_bf16x3); bf16: both in bf16 "
                         "(results: serve_load_bf16); int8: each server's own int8 mode, with each one's cosine to "
                         "fp32 (results: serve_load_int8)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--render-last", action="store_true",
                    help="re-render the BENCHMARKS.md section of --precision from its last record")
    ap.add_argument("--remeasure-roofline", action="store_true",
                    help="with --render-last: measure the ceiling again at --precision's GEMM rate and append the "
                         "corrected record")
    ap.add_argument("--no-report", action="store_true")
    ap.add_argument("--section-suffix", default="",
                    help="appended to the results file / BENCHMARKS.md section name (e.g. _amx for a CPU of another "
                         "kind, so that each CPU's figures stay side by side)")
    ap.add_argument("--quiet", action="store_true")
    opts = ap.parse_args(argv)
    if opts.reps is None:
        opts.reps = 2 if opts.quick else 5
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if opts.remeasure_roofline and not opts.render_last:
        raise SystemExit("--remeasure-roofline goes with --render-last (it corrects the last record's ceiling).")
    name = "serve_load" if opts.precision == "fp32" else f"serve_load_{opts.precision.replace('-', '_')}"  # results
    name += opts.section_suffix
    if opts.render_last:  # re-render the section of --precision from its last record (no servers started)
        last = last_results(name)  # a clear exit where nothing was measured yet
        last["counts"] = {wl: {int(c): n for c, n in v.items()} for wl, v in last["counts"].items()}  # JSON keys
        if opts.remeasure_roofline:  # a record whose ceiling was priced at another precision's rate
            if last.get("cpu") != cpu_line():
                raise SystemExit(f"--remeasure-roofline: the last {name} record was measured on {last.get('cpu')!r}, "
                                 f"this is {cpu_line()!r}; a ceiling is only comparable on the same CPU.")
            superseded = last["machine"]["date"]
            last["roofline"] = roofline(model_folder(), load_workloads(), threads=os.cpu_count() or 1,
                                        precision=roofline_precision(opts.precision))
            last["roofline"]["rate_measured_after"] = machine()["date"]
            last["supersedes"] = f"the {superseded} record's ceiling (priced at another rate); same load runs"
            # appended as a new record that keeps the load runs' machine line (their date)
            write_results(name, {k: v for k, v in last.items() if k != "benchmark"}, md_load(last))
        else:
            write_section(name, md_load(last), last["machine"])
        return
    folder = model_folder()
    workloads = load_workloads()
    logdir = Path(tempfile.mkdtemp(prefix="serve-load-logs-"))
    log(opts.quiet, f"model folder {folder}; {len(workloads['short'])} short sentences, "
                    f"{len(workloads['scifact'])} abstracts; server logs in {logdir}")
    report = not (opts.quick or opts.no_report)
    if opts.part in ("load", "all"):
        res = part_load(opts, workloads, folder, logdir)
        res["section_suffix"] = opts.section_suffix
        md = md_load(res)
        print(md)
        if report:
            write_results(name, res, md)
    if opts.part in ("faults", "all"):
        res = part_faults(opts, workloads, folder, logdir)
        md = md_faults(res)
        print(md)
        if report:
            write_results("serve_faults", res, md)
    shutil.rmtree(logdir, ignore_errors=True)  # kept only when a run failed (its path is in the error)


if __name__ == "__main__":
    main()
