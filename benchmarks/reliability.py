"""Reliability: every writer survives SIGKILL mid-write, and what the per-file checksums cost.

(a) Crash safety. For each writer (index save, vectors save as a folder and as word2vec binary,
``embedstack encode --out``, model save for a BM25 component and a sentence-transformers folder, alias
swap) an old version is saved first. Each trial forks a child process (the parent imported
everything, so a child starts in milliseconds) that writes a new version over the old one; the
parent waits until the child is about to write, sleeps a random time in ``[0, 1.5 × W]`` (``W``: the
median duration of a complete write, measured first) and SIGKILLs it (``killed before exit``: the kill
landed while the child still ran, somewhere between its first byte and its last cleanup). Then it classifies the target:

* ``old intact``: every file is byte-identical to the old version (nothing of the new one is visible);
* ``new complete``: it loads (checksums verified) and reads/searches exactly like the new version;
* ``torn``: anything else: a load error, other results, a missing folder (must be 0).

``temp files left by kills`` counts the hidden temporary siblings (``.NAME.PID.XXXX.tmp``) a killed
writer could not remove: garbage that is never read. The next write of the same target deletes those
whose process is gone; ``left after the next write`` checks that after the last trial. (The alias
writer saves each version under a new folder name, so the temporaries of killed versions stay.)

``encode --out`` runs the command-line entry point (``embedstack encode -m MODEL INPUT -o OUT``) in
the child, with a small random transformer saved as a model folder so that 100 trials take seconds.

(b) Checksum cost on a flat float32 index of ``--rows`` × ``--dim`` (default 1M × 384, 1.5 GB): save
with checksums against the same save with the hashing step stubbed out, and load with
``verify=True`` / ``verify=False``, memory-mapped and not. Medians of ``--repeats`` runs with the
spread (min-max). The page cache is warm for loads (the file was just written): this is the hashing
cost, not disk reads.

Results are appended to ``benchmarks/results/reliability.jsonl``; a Markdown table is printed.

Run:  .venv/bin/python benchmarks/reliability.py [--trials 100] [--only crash|checksum] [--rows 1000000]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # forked children must not inherit half-started thread pools

import argparse  # noqa: E402
import contextlib  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import RESULTS, command_line, machine  # noqa: E402

WORDS = ["the", "cat", "dog", "sat", "on", "mat", "a", "big", "small", "red", "house", "tree", "ran", "over",
         "quick", "brown", "fox", "jumps", "lazy", "man", "guitar", "playing", "is", "."]


def log(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def tree_digest(path: Path) -> str | None:
    """sha256 over every file's relative name and bytes (a symlink: its target's tree); None if absent."""
    p = Path(os.path.realpath(path))
    if not p.exists():
        return None
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file())
    for f in files:
        h.update(str(f.relative_to(p) if f != p else f.name).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- writers

@dataclass
class Writer:
    """One writer under test: ``write(target, version)`` and ``read(target) -> fingerprint``."""

    name: str
    write: Callable[[Path, str], None]
    read: Callable[[Path], Any]
    same: Callable[[Any, Any], bool] = lambda a, b: bool(a == b)
    alias: bool = False  # target is an alias (symlink) swapped to a fresh folder per write


def _index_writer(rows: int, dim: int) -> Writer:
    from embedstack.index import FlatIndex, load_index

    rng = np.random.default_rng(0)
    queries = rng.normal(size=(5, dim)).astype(np.float32)
    versions = {}
    for v, n, seed in (("old", rows, 1), ("new", rows + rows // 5, 2)):
        idx = FlatIndex(dim)
        x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
        idx.add(x, [f"{v}{i}" for i in range(n)])
        versions[v] = idx

    def write(target: Path, version: str) -> None:
        versions[version].save(target)

    def read(target: Path) -> Any:
        idx = load_index(target, mmap=False)
        scores, ids = idx.search_ids(queries, 10)
        return len(idx), ids.tolist(), np.round(scores, 5).tolist()

    return Writer("index save (flat)", write, read)


def _vectors(n: int, dim: int, seed: int) -> Any:
    from embedstack.static import KeyedVectors

    rng = np.random.default_rng(seed)
    return KeyedVectors([f"w{seed}_{i}" for i in range(n)], rng.normal(size=(n, dim)).astype(np.float32))


def _kv_read(kv: Any) -> Any:
    return len(kv), kv.index_to_key[:5], hashlib.sha256(np.ascontiguousarray(kv.vectors).tobytes()).hexdigest()


def _vectors_writers(n: int, dim: int) -> list[Writer]:
    from embedstack.static import KeyedVectors, load_vectors

    versions = {"old": _vectors(n, dim, 1), "new": _vectors(n + n // 5, dim, 2)}
    folder = Writer("vectors save (folder)", lambda t, v: versions[v].save(t), lambda t: _kv_read(load_vectors(t)))
    binary = Writer("vectors save (word2vec .bin)",
                    lambda t, v: versions[v].save_word2vec_format(t, binary=True),
                    lambda t: _kv_read(KeyedVectors.load_word2vec_format(t, binary=True)))
    return [folder, binary]


def _bm25_writer(docs: int) -> Writer:
    from embedstack.count import BM25

    r = random.Random(0)
    queries = ["the1 cat2 sat3", "quick4 brown5 fox6", "a7 man8 playing9 guitar10"]
    versions = {}
    for v, n in (("old", docs), ("new", docs + docs // 5)):
        corpus = [" ".join(r.choice(WORDS) + str(r.randrange(500)) for _ in range(20)) for _ in range(n)]
        model = BM25()
        model.fit(corpus)
        versions[v] = model

    def read(target: Path) -> Any:
        m = BM25.load(target)
        x = m.encode_sparse(queries)
        h = hashlib.sha256(np.asarray(x.data).tobytes() + np.asarray(x.indices).tobytes())
        arrays, state = m._state()  # the whole fitted state, not only what three queries touch
        for k in sorted(arrays):
            h.update(k.encode() + np.ascontiguousarray(arrays[k]).tobytes())
        h.update(json.dumps(state, sort_keys=True, default=str).encode())
        return x.shape, h.hexdigest()

    return Writer("model save (BM25)", lambda t, v: versions[v].save(t), read)


def _tiny_encoder(hidden: int, seed: int) -> Any:
    from embedstack.neural.config import BertConfig
    from embedstack.neural.sentence import SentenceEncoder
    from embedstack.neural.tokenizer import WordPiece
    from embedstack.neural.transformer import BertModel

    tok = WordPiece.from_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=2 * hidden, max_position_embeddings=64)
    return SentenceEncoder(BertModel(cfg).init_weights(seed=seed), tok, max_seq_length=32)


def _sentence_writer(hidden: int) -> Writer:
    from embedstack.neural.sentence import SentenceEncoder

    versions = {"old": _tiny_encoder(hidden, 1), "new": _tiny_encoder(hidden, 2)}

    def read(target: Path) -> Any:  # weights only: no torch compute in the parent (it forks afterwards)
        enc = SentenceEncoder.from_folder(target)
        h = hashlib.sha256()
        for k, v in sorted(enc.model.state_dict().items()):
            h.update(k.encode() + v.detach().cpu().numpy().tobytes())
        return enc.tokenizer.vocab_size, h.hexdigest()

    return Writer("model save (sentence-transformers folder)", lambda t, v: versions[v].save(t), read)


def _encode_writer(work: Path, lines: int) -> Writer:
    model = _tiny_encoder(64, 0).save(work / "encode-model")
    r = random.Random(0)
    inputs = {}
    for v, n in (("old", lines // 4), ("new", lines)):
        p = work / f"encode-{v}.txt"
        p.write_text("\n".join(" ".join(r.choice(WORDS) for _ in range(r.randrange(3, 30))) for _ in range(n)) + "\n",
                     encoding="utf-8")
        inputs[v] = p

    def write(target: Path, version: str) -> None:
        from embedstack.cli.app import app

        try:
            app(["encode", "-m", str(model), str(inputs[version]), "-o", str(target), "-q", "--batch-size", "16"],
                standalone_mode=False)
        except SystemExit as exc:  # pragma: no cover - an error exit is a failed write, visible as torn/old
            os._exit(int(exc.code or 0))

    def read(target: Path) -> Any:
        return np.load(target)

    def same(a: Any, b: Any) -> bool:
        return bool(a.shape == b.shape and np.allclose(a, b, atol=1e-6))

    return Writer("encode --out (CLI, streamed .npy)", write, read, same)


def _alias_writer(rows: int, dim: int) -> Writer:
    from embedstack.index import set_alias

    base = _index_writer(rows, dim)
    counter = {"n": 0}

    def write(target: Path, version: str) -> None:
        counter["n"] += 1
        folder = target.parent / f"v-{version}-{os.getpid()}-{counter['n']}"
        base.write(folder, version)
        set_alias(target, folder)

    return Writer("alias swap (save v2 + set_alias)", write, base.read, alias=True)


# --------------------------------------------------------------------------- the trial loop

def _fork_write(writer: Writer, target: Path, version: str) -> tuple[int, int]:
    """Fork a child that signals, then writes; return (pid, read end of the signal pipe)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        code = 0
        try:
            os.write(w, b"r")
            writer.write(target, version)
        except BaseException as exc:  # noqa: BLE001 - report and exit without running the parent's cleanup
            print(f"child error: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            code = 1
        os._exit(code)
    os.close(w)
    return pid, r


def _wait_ready(rfd: int) -> None:
    os.read(rfd, 1)
    os.close(rfd)


def _complete_write(writer: Writer, target: Path, version: str) -> float:
    """A whole write in a forked child; seconds from its start signal to its exit."""
    pid, rfd = _fork_write(writer, target, version)
    _wait_ready(rfd)
    t = time.perf_counter()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{writer.name}: a complete write failed (exit status {status})")
    return time.perf_counter() - t


def _leftovers(folder: Path, keep: set[str]) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(".") and p.name not in keep]


def crash_trials(writer: Writer, trials: int, work: Path, rng: random.Random, quiet: bool) -> dict[str, Any]:
    box = work / writer.name.split()[0] / f"w{abs(hash(writer.name)) % 10**6}"
    box.mkdir(parents=True, exist_ok=True)
    target = box / ("live" if writer.alias else "artifact")
    if writer.name.startswith("encode"):
        target = box / "vectors.npy"
    elif "word2vec" in writer.name:
        target = box / "vectors.bin"
    # reference versions, written by complete child runs (the parent never runs the writer itself)
    refs = {}
    durations = []
    for version in ("new", "old"):
        ref = box / f"ref-{version}{target.suffix}"
        durations.append(_complete_write(writer, ref, version))
        refs[version] = writer.read(ref)
    if writer.same(refs["old"], refs["new"]):
        raise SystemExit(f"{writer.name}: the old and new versions read the same; the trial cannot tell them apart")
    for _ in range(2):
        durations.append(_complete_write(writer, box / f"calib{target.suffix}", "new"))
    full = statistics.median(durations)

    def reset_old() -> None:
        for p in list(box.iterdir()):
            if p.name.startswith("ref-") or p.name.startswith(".ref-"):
                continue
            if p.is_symlink() or p.is_file():
                p.unlink()
            else:
                shutil.rmtree(p)
        _complete_write(writer, target, "old")

    reset_old()
    old_digest = tree_digest(target)
    counts = {"old_intact": 0, "new_complete": 0, "torn": 0, "temp_left": 0, "killed_mid_write": 0}
    seen: set[str] = set()
    torn_examples: list[str] = []
    for trial in range(trials):
        if tree_digest(target) != old_digest:
            reset_old()
            old_digest = tree_digest(target)
            seen = set()
        pid, rfd = _fork_write(writer, target, "new")
        _wait_ready(rfd)
        time.sleep(rng.uniform(0.0, 1.5 * full))
        with contextlib.suppress(ProcessLookupError):  # already exited: the write completed
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status)
        counts["killed_mid_write"] += int(killed)
        counts["temp_left"] += len(_leftovers(box, seen))  # new garbage of this kill (swept by the next write)
        seen = {p.name for p in _leftovers(box, set())}
        if writer.alias:  # versions the alias does not point to are unreachable: drop them
            live = Path(os.path.realpath(target))
            for p in box.glob("v-new-*"):
                if p != live:
                    shutil.rmtree(p, ignore_errors=True)
        if tree_digest(target) == old_digest:
            counts["old_intact"] += 1
            continue
        try:
            got = writer.read(target)
            ok = writer.same(got, refs["new"])
            why = "" if ok else "reads like neither version"
        except Exception as exc:  # noqa: BLE001 - every failure to read is a torn write
            ok, why = False, f"{type(exc).__name__}: {exc}"
        if ok:
            counts["new_complete"] += 1
        else:
            counts["torn"] += 1
            if len(torn_examples) < 3:
                torn_examples.append(f"trial {trial}: {why}"[:300])
        if not quiet and (trial + 1) % max(1, trials // 5) == 0:
            log(f"  {writer.name}: {trial + 1}/{trials}")
    _complete_write(writer, target, "new")  # one more write of the same target sweeps its dead temporaries
    counts["temp_after_next_write"] = len(_leftovers(box, set()))
    shutil.rmtree(box, ignore_errors=True)
    return {"writer": writer.name, "trials": trials, "write_seconds": round(full, 4), **counts,
            "torn_examples": torn_examples}


def run_crash(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    import torch  # noqa: F401 - imported before forking so that children start fast

    import embedstack.cli.app  # noqa: F401
    import embedstack.neural.sentence  # noqa: F401

    writers: list[Writer] = [_index_writer(args.crash_rows, 64), *_vectors_writers(args.crash_rows // 2, 100),
                             _encode_writer(work, args.encode_lines), _bm25_writer(args.crash_rows // 5),
                             _sentence_writer(64), _alias_writer(args.crash_rows // 2, 64)]
    if args.writers:
        writers = [w for w in writers if any(s in w.name for s in args.writers)]
    rng = random.Random(args.seed)
    rows = []
    for w in writers:
        log(f"crash safety: {w.name} ({args.trials} trials)", args.quiet)
        rows.append(crash_trials(w, args.trials, work, rng, args.quiet))
    return rows


# --------------------------------------------------------------------------- checksum cost

def _timed(fn: Callable[[], Any]) -> float:
    os.sync()  # the previous step's dirty pages are written back outside the timing
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _stat(xs: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(xs), 3), "min": round(min(xs), 3), "max": round(max(xs), 3)}


def run_checksum(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import embedstack.io.manifest as manifest_mod
    from embedstack.index import FlatIndex, load_index

    n, dim = args.rows, args.dim
    log(f"checksum cost: building a {n:,} x {dim} float32 flat index", args.quiet)
    idx = FlatIndex(dim)
    rng = np.random.default_rng(0)
    step = 100_000
    ids = [f"d{i}" for i in range(n)]
    for s in range(0, n, step):
        idx.add(rng.standard_normal(size=(min(step, n - s), dim), dtype=np.float32), ids[s:s + step])
    folder = work / "big-index"
    real_checksums = manifest_mod.file_checksums
    q = rng.standard_normal(size=(1, dim), dtype=np.float32)
    times: dict[str, list[float]] = {k: [] for k in ("save_with_checksums", "save_without_checksums",
                                                     "load_mmap_verify", "load_mmap_noverify",
                                                     "load_ram_verify", "load_ram_noverify", "hash_only")}
    def save(checksums: bool) -> None:
        if not checksums:  # the same save with the hashing step stubbed out
            manifest_mod.file_checksums = lambda folder, **kw: {}  # type: ignore[assignment]
        try:
            idx.save(folder)
        finally:
            manifest_mod.file_checksums = real_checksums

    save(True)  # warm-up: the first write of a fresh folder pays for allocating its blocks
    for r in range(args.repeats):
        log(f"  repeat {r + 1}/{args.repeats}", args.quiet)
        order = (True, False) if r % 2 == 0 else (False, True)  # alternate to share the machine's drift
        for checksums in order:
            key = "save_with_checksums" if checksums else "save_without_checksums"
            times[key].append(_timed(lambda checksums=checksums: save(checksums)))
        times["hash_only"].append(_timed(lambda: real_checksums(folder)))
        for mmap in (True, False):
            for verify in order:
                key = f"load_{'mmap' if mmap else 'ram'}_{'verify' if verify else 'noverify'}"

                def load(mmap: bool = mmap, verify: bool = verify) -> None:
                    loaded = load_index(folder, mmap=mmap, verify=verify)
                    loaded.search(q, 10)  # first search included: it touches the pages
                    del loaded

                times[key].append(_timed(load))
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    shutil.rmtree(folder, ignore_errors=True)
    return {"rows": n, "dim": dim, "bytes_on_disk": size, "repeats": args.repeats,
            **{k: _stat(v) for k, v in times.items()}}


# --------------------------------------------------------------------------- report

def markdown(crash: list[dict[str, Any]] | None, cost: dict[str, Any] | None, trials: int) -> str:
    out = []
    if crash:
        out.append(f"Crash safety: SIGKILL at a random moment of a write, {trials} trials per writer.\n")
        out.append("| writer | trials | killed before exit | old intact (new absent) | new complete | torn "
                   "| temp files left by kills | left after the next write |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in crash:
            out.append(f"| {r['writer']} | {r['trials']} | {r['killed_mid_write']} | {r['old_intact']} | "
                       f"{r['new_complete']} | **{r['torn']}** | {r['temp_left']} | {r['temp_after_next_write']} |")
    if cost:
        gb = cost["bytes_on_disk"] / 1e9
        out.append(f"\nChecksum cost: flat index {cost['rows']:,} × {cost['dim']} float32 ({gb:.2f} GB on disk), "
                   f"median of {cost['repeats']} (min-max), seconds.\n")
        out.append("| step | with checksums | without | cost |")
        out.append("|---|---:|---:|---:|")

        def cell(k: str) -> str:
            s = cost[k]
            return f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})"

        for label, a, b in (("save", "save_with_checksums", "save_without_checksums"),
                            ("load, memory-mapped (+1 search)", "load_mmap_verify", "load_mmap_noverify"),
                            ("load into RAM (+1 search)", "load_ram_verify", "load_ram_noverify")):
            diff = cost[a]["median"] - cost[b]["median"]
            out.append(f"| {label} | {cell(a)} | {cell(b)} | {diff:+.2f} s |")
        out.append(f"| sha256 of the folder alone | {cell('hash_only')} | | |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=100, help="SIGKILL trials per writer.")
    ap.add_argument("--only", choices=["crash", "checksum"], help="Run one part only.")
    ap.add_argument("--writers", nargs="*", help="Only writers whose name contains one of these strings.")
    ap.add_argument("--crash-rows", type=int, default=20_000, help="Rows of the index/vectors the writers save.")
    ap.add_argument("--encode-lines", type=int, default=1000, help="Input lines of the encode writer (new version).")
    ap.add_argument("--rows", type=int, default=1_000_000, help="Rows of the checksum-cost index.")
    ap.add_argument("--dim", type=int, default=384, help="Dimensions of the checksum-cost index.")
    ap.add_argument("--repeats", type=int, default=3, help="Runs per checksum-cost figure.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None, help="Scratch folder (default: a temporary one).")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="embedstack-reliability-", dir=args.workdir))
    cmd = command_line("reliability.py")
    try:
        crash = run_crash(args, work) if args.only in (None, "crash") else None
        cost = run_checksum(args, work) if args.only in (None, "checksum") else None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    record = {"benchmark": "reliability", "machine": machine(), "command": cmd.strip(), "crash": crash,
              "checksum_cost": cost}
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "reliability.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
    print(markdown(crash, cost, args.trials))
    print(f"\n_Command: `{cmd.strip()}`; {record['machine']['date']}, {record['machine']['cpus']} CPUs._")
    if crash and any(r["torn"] for r in crash):
        raise SystemExit("torn writes found: " + "; ".join(f"{r['writer']}: {r['torn_examples']}" for r in crash if r["torn"]))


if __name__ == "__main__":
    main()
