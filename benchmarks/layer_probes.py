"""The layer-wise revelation at our scale: a linear probe on every layer, for syntax (POS) and word sense (WiC).

Peters et al. (2018, "Deep contextualized word representations", table 5/6) probed ELMo's biLSTM layers: POS
tagging (PTB) was better from the first layer than the second (97.3 vs 96.8) and word-sense disambiguation
(SemCor → Senseval/SemEval F1) better from the second (69.0 vs 67.4). We repeat it on our models:

* POS: UD English EWT v2.16, UPOS (17 tags); probe trained on train, stopped on dev, scored on **test**.
* Word sense: WiC (Pilehvar & Camacho-Collados 2019), same sense or not for a word in two sentences; the probe
  reads ``[u * v, |u - v|]`` of the target word's vectors; trained on train, stopped on dev, scored on **test**.
* Models: all-MiniLM-L6-v2 (layers 0-6), our masked-LM BERT ``bert-mlm-small`` (layers 0-2), our ELMo (layers
  0-2, ``--elmo PATH``), and the learned ScalarMix of each model's layers. Baselines: the most frequent tag of each
  word (POS), the majority class (WiC).

Probes: :func:`embedstack.evaluation.layers.probe_pos` / ``probe_wic`` (softmax regression, Adam, L2 chosen on
dev from a small grid, early stopping on dev, standardised features; a word's vector is the mean of its
sub-word vectors). Features are cached in ``--cache`` (default /tmp, never the repository); each model's result
is kept in results/layer_probes_arms.json, so a rerun with ``--elmo`` reuses the other models (``--fresh`` redoes
them).

Usage: python benchmarks/layer_probes.py [--elmo ~/.cache/embedstack/recipes/elmo-enwiki]
           [--max-train-sentences N] [--max-wic-train N] [--models minilm,bert-mlm-small] [--fresh] [--no-write]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import RESULTS, load_arms, log, save_arm, write_results  # noqa: E402

NAME = "layer_probes"
BERT_MLM = Path("~/.cache/embedstack/recipes/bert-mlm-small").expanduser()
PAPER = {"pos": (97.3, 96.8), "wsd": (67.4, 69.0)}  # Peters et al. 2018: first vs second biLSTM layer
POS_L2 = (1e-6, 1e-4)
WIC_L2 = (1e-4, 1e-3, 1e-2)
PROBE = {"pos": {"batch_size": 512, "max_epochs": 30, "patience": 3},
         "wic": {"batch_size": 256, "max_epochs": 60, "patience": 6}}
CHUNK = 256  # sentences per call to word_layers


class _Notes(logging.Handler):
    """Counts what the library warns about (sentences encoded in windows, words cut) for the report."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.windowed = self.sentences = self.cut = 0
        self.limit = 0
        self.other: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        if "windows of whole words" in str(record.msg) and len(args) == 5:
            self.windowed += int(args[0])
            self.cut += int(args[3])
            self.limit = int(args[2])
        else:
            self.other.append(record.getMessage())

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"windowed": self.windowed, "cut": self.cut, "limit": self.limit,
                                    "other": self.other}), encoding="utf-8")

    def add(self, path: Path) -> None:
        """Add the counts kept beside a cached feature file (so a cached run reports what the first one saw)."""
        if path.is_file():
            d = json.loads(path.read_text(encoding="utf-8"))
            self.windowed += d["windowed"]
            self.cut += d["cut"]
            self.limit = d["limit"] or self.limit
            self.other += d["other"]

    def summary(self) -> list[str]:
        out = list(dict.fromkeys(self.other))
        if self.windowed or self.cut:
            out.append(f"{self.windowed} sentence(s) longer than {self.limit} sub-words were encoded in windows of "
                       f"whole words, {self.cut} word(s) longer than a window kept their first {self.limit - 2} pieces")
        return out


#: bump when layers.py changes how word vectors are computed (pooling of sub-words, windows): old features are stale
FEATURES_VERSION = 1


def _identity(path: Path) -> str:
    """Cache key of a model's features: every file of its folder (weights, tokenizer, config: size + mtime), the
    data files probed (UD EWT, WiC) and :data:`FEATURES_VERSION`."""
    from embedstack.data._registry import resolve_dataset

    parts = [f"v{FEATURES_VERSION}", str(path.resolve())]
    for root in (path, resolve_dataset("ud-english-ewt"), resolve_dataset("wic")):
        for f in sorted(p for p in Path(root).rglob("*") if p.is_file()):
            st = f.stat()
            parts.append(f"{f}:{st.st_size}:{int(st.st_mtime)}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _features(model: Any, sentences: list[list[str]], path: Path, what: str, notes: _Notes) -> np.ndarray:
    """Stacked (L, N, D) word layers of ``sentences``, computed once into a .npy memmap under the cache."""
    from embedstack.evaluation.layers import word_layers

    side = path.with_suffix(".notes.json")
    if path.is_file():
        notes.add(side)
        return np.load(path, mmap_mode="r")
    mine = _Notes()
    logger = logging.getLogger("embedstack.evaluation.layers")
    logger.addHandler(mine)
    try:
        return _compute(word_layers, model, sentences, path, what)
    finally:
        logger.removeHandler(mine)
        if path.is_file():
            mine.save(side)
            notes.add(side)


def _compute(word_layers: Any, model: Any, sentences: list[list[str]], path: Path, what: str) -> np.ndarray:
    n_words = sum(len(s) for s in sentences)
    out: np.ndarray | None = None
    pos, t0 = 0, time.perf_counter()
    tmp = path.with_suffix(".partial.npy")
    for a in range(0, len(sentences), CHUNK):
        layers = word_layers(model, sentences[a:a + CHUNK])
        if out is None:
            L, _, D = layers[0].shape
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(L, n_words, D))
        for x in layers:
            out[:, pos:pos + x.shape[1]] = x
            pos += x.shape[1]
        if (a // CHUNK) % 10 == 0 or a + CHUNK >= len(sentences):
            log(f"  {what}: {min(a + CHUNK, len(sentences))}/{len(sentences)} sentences "
                f"({time.perf_counter() - t0:.0f} s)")
    assert out is not None and pos == n_words
    out.flush()
    del out
    os.replace(tmp, path)
    return np.load(path, mmap_mode="r")


def _wic_features(model: Any, ds: Any, folder: Path, split: str, notes: _Notes) -> np.ndarray:
    """(L, N, 2, D): the target word's layers in both sentences of each pair."""
    path = folder / f"wic_{split}_{len(ds)}.npy"
    a = _features(model, ds.sentences1, folder / f"wic_{split}_{len(ds)}_s1.npy", f"WiC {split} sentence 1", notes)
    b = _features(model, ds.sentences2, folder / f"wic_{split}_{len(ds)}_s2.npy", f"WiC {split} sentence 2", notes)
    if path.is_file():
        return np.load(path, mmap_mode="r")
    off1 = np.cumsum([0] + [len(s) for s in ds.sentences1[:-1]]) + np.asarray(ds.index1)
    off2 = np.cumsum([0] + [len(s) for s in ds.sentences2[:-1]]) + np.asarray(ds.index2)
    pairs = np.stack([np.asarray(a[:, off1]), np.asarray(b[:, off2])], axis=2).astype(np.float32)
    np.save(path, pairs)
    return np.load(path, mmap_mode="r")


def load_models(args: argparse.Namespace) -> list[tuple[str, Any, Path | None, str]]:
    """``[(name, model or None, folder, why skipped)]``."""
    from embedstack.neural.hub import resolve_model
    from embedstack.neural.sentence import SentenceEncoder

    out: list[tuple[str, Any, Path | None, str]] = []
    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    for name in wanted:
        try:
            folder = resolve_model("all-MiniLM-L6-v2", download=False)[0] if name == "minilm" else \
                BERT_MLM if name == "bert-mlm-small" else Path(name).expanduser()
            out.append((name, SentenceEncoder.from_folder(folder), folder, ""))
        except Exception as exc:  # noqa: BLE001 - any failure to load is reported, the rest still runs
            out.append((name, None, None, f"{type(exc).__name__}: {exc}"))
    if args.elmo:
        path = Path(args.elmo).expanduser()
        why, elmo = "", None
        if not (path / "manifest.json").is_file():
            why = f"{path} holds no trained ELMo (no manifest.json)"
        else:
            try:
                from embedstack.registry import load_component

                elmo = load_component(path)
                if not callable(getattr(elmo, "word_layers", None)):
                    why, elmo = f"{type(elmo).__name__} from {path} has no word_layers(sentences)", None
            except Exception as exc:  # noqa: BLE001
                why = f"loading {path} failed: {type(exc).__name__}: {exc}"
        out.append(("elmo", elmo, path, why))
    return out


def run_model(name: str, model: Any, folder: Path, data: dict[str, Any], args: argparse.Namespace,
              settings: dict[str, Any]) -> dict[str, Any]:
    from embedstack.evaluation.layers import probe_pos, probe_wic

    cache = Path(args.cache).expanduser() / f"{name}-{_identity(folder)}"  # features depend on the model and data only
    cache.mkdir(parents=True, exist_ok=True)
    notes = _Notes()
    t0 = time.perf_counter()
    ud = {s: _features(model, data["ud"][s].sentences, cache / f"ud_{s}_{len(data['ud'][s])}.npy", f"{name} UD {s}",
                       notes) for s in ("train", "dev", "test")}
    wic = {s: _wic_features(model, data["wic"][s], cache, s, notes) for s in ("train", "dev", "test")}
    feat_s = time.perf_counter() - t0
    tags = {s: [t for ts in data["ud"][s].tags for t in ts] for s in ("train", "dev", "test")}
    log(f"{name}: features {tuple(ud['train'].shape)} (UD train), {tuple(wic['train'].shape)} (WiC train); probing POS")
    t1 = time.perf_counter()
    pos = probe_pos(ud["train"], tags["train"], ud["test"], tags["test"], layers_dev=ud["dev"], tags_dev=tags["dev"],
                    l2=POS_L2, progress=lambda m: log(f"  {name} POS {m}"), **PROBE["pos"])
    log(f"{name}: probing WiC")
    labels = {s: data["wic"][s].labels for s in ("train", "dev", "test")}
    wsd = probe_wic(wic["train"], labels["train"], wic["dev"], labels["dev"], wic["test"], labels["test"], l2=WIC_L2,
                    progress=lambda m: log(f"  {name} WiC {m}"), **PROBE["wic"])
    return {"model": name, "folder": str(folder), "n_layers": int(ud["train"].shape[0]), "dim": int(ud["train"].shape[-1]),
            "pos": pos, "wic": wsd, "notes": notes.summary(), "settings": settings,
            "feature_seconds": feat_s, "probe_seconds": time.perf_counter() - t1}


# ---------------------------------------------------------------------------------------------- report
def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def _se_diff(p1: float, p2: float, n: int) -> float:
    """Standard error of a difference of two accuracies on the same n items, treated as independent (conservative)."""
    return math.sqrt((p1 * (1 - p1) + p2 * (1 - p2)) / n)


def _table(task: str, models: dict[str, dict[str, Any]], baseline: tuple[str, float]) -> str:
    width = max(r["n_layers"] for r in models.values())
    head = "| model | " + " | ".join(f"L{i}" for i in range(width)) + " | learned mix | mix weights (softmax, L0→) | best layer (dev) |"
    lines = [head, "|---" * (width + 4) + "|"]
    for name, r in models.items():
        res = r[task]
        cells = [_pct(res["layers"][i]["test"]) if i < len(res["layers"]) else "" for i in range(width)]
        mix = res.get("mix")
        best = max(res["layers"], key=lambda x: x["dev"])
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {_pct(mix['test'] if mix else None)} | "
                     + (" / ".join(f"{w:.2f}" for w in mix["weights"]) + f" (γ {mix['gamma']:.2f})" if mix else "—")
                     + f" | L{best['layer']} |")
    lines.append(f"| {baseline[0]} | " + " | ".join("" for _ in range(width)) + f" | {_pct(baseline[1])} | | |")
    return "\n".join(lines)


def _verdict(claim: str, ours: tuple[float, float], n: int, paper: tuple[float, float], expect_first: bool) -> str:
    a, b = ours
    se = _se_diff(a, b, n)
    diff = a - b
    sign_ok = diff > 0 if expect_first else diff < 0
    if abs(diff) < 2 * se:
        word = "not resolved at our scale (the gap is within 2 standard errors)"
    elif sign_ok:
        word = "**holds at our scale**"
    else:
        word = "**refuted at our scale**"
    return (f"{claim}: paper L1 {paper[0]} vs L2 {paper[1]}; ours L1 {100 * a:.1f} vs L2 {100 * b:.1f} "
            f"(difference {100 * diff:+.1f} points, 2 SE = {200 * se:.1f}) → {word}.")


def markdown(results: dict[str, Any], skipped: dict[str, str], command: str) -> str:
    models = results["models"]
    ud_n, wic_n = results["data"]["ud_test_words"], results["data"]["wic_test_pairs"]
    out = ["## Layer-wise linear probes: POS (UD EWT) and word sense (WiC)", "",
           "Peters et al. (2018) found syntax best read from ELMo's first biLSTM layer and word sense from the second. "
           "A linear probe (softmax regression; L2 from a small grid and the stopping epoch chosen on dev; features "
           "standardised per layer) on every layer of each model, scored once on the test split. A word's vector is the "
           "mean of its sub-word vectors; the learned mix is ELMo's ScalarMix γ·Σ softmax(s)ⱼ hⱼ over all layers, trained "
           "jointly with the probe. WiC features are [u·v, |u−v|] of the target word's vectors in the two sentences.", "",
           f"**POS** — UD English EWT v2.16, UPOS accuracy (%) on test ({ud_n:,} words; train "
           f"{results['data']['ud_train_sentences']:,} sentences / {results['data']['ud_train_words']:,} words):", "",
           _table("pos", models, ("most frequent tag per word (baseline)", results["baselines"]["pos_most_frequent_tag"])),
           "", f"**Word sense** — WiC accuracy (%) on test ({wic_n:,} pairs, 50% same sense; train "
           f"{results['data']['wic_train_pairs']:,} pairs):", "",
           _table("wic", models, ("majority class (baseline)", results["baselines"]["wic_majority"])), "",
           f"![accuracy per layer]({'benchmarks/results/layer_probes.png'})", ""]
    out.append("**Verdict on Peters et al. (2018).** ")
    if "elmo" in models:
        e = models["elmo"]
        pos = (e["pos"]["layers"][1]["test"], e["pos"]["layers"][2]["test"])
        wic = (e["wic"]["layers"][1]["test"], e["wic"]["layers"][2]["test"])
        out[-1] += ("Our ELMo (layer 0 = character CNN, 1 and 2 = biLSTM layers). "
                    + _verdict("POS, first layer better", pos, ud_n, PAPER["pos"], True) + " "
                    + _verdict("Word sense, second layer better (paper: WSD F1; ours: WiC accuracy, a different task "
                               "and metric, so only the direction is compared)", wic, wic_n, PAPER["wsd"], False))
        mw = e["pos"].get("mix", {}).get("weights"), e["wic"].get("mix", {}).get("weights")
        if mw[0] and mw[1]:
            out[-1] += (f" Learned mix weights on layers 0/1/2 (the mix's own answer to the same question): POS "
                        f"{' / '.join(f'{w:.2f}' for w in mw[0])}, WiC {' / '.join(f'{w:.2f}' for w in mw[1])}. "
                        "The SE treats the two layers' test accuracies as independent, which overstates the noise "
                        "of a difference on the same items (conservative).")
    else:
        out[-1] += f"No ELMo in this run ({skipped.get('elmo', 'not requested: pass --elmo PATH')}), so the claim is not tested here."
    if "minilm" in models:
        m = models["minilm"]
        bp = max(m["pos"]["layers"], key=lambda x: x["dev"])
        bw = max(m["wic"]["layers"], key=lambda x: x["dev"])
        top = m["n_layers"] - 1
        out.append("")
        out.append(f"**MiniLM's layers.** POS peaks at layer {bp['layer']} of {top} on dev "
                   f"({_pct(bp['test'])} test; last layer {_pct(m['pos']['layers'][-1]['test'])}, embeddings "
                   f"{_pct(m['pos']['layers'][0]['test'])}); WiC peaks at layer {bw['layer']} "
                   f"({_pct(bw['test'])} test; last layer {_pct(m['wic']['layers'][-1]['test'])}, embeddings "
                   f"{_pct(m['wic']['layers'][0]['test'])}). The WiC peak's gap to the last "
                   f"layer is {100 * (bw['test'] - m['wic']['layers'][-1]['test']):+.1f} points against 2 SE = "
                   f"{200 * _se_diff(bw['test'], m['wic']['layers'][-1]['test'], wic_n):.1f} ({wic_n} pairs).")
    notes = [f"{k}: {n}" for k, r in models.items() for n in r.get("notes", [])]
    if skipped:
        notes += [f"{k} skipped: {why}" for k, why in skipped.items()]
    if notes:
        out += ["", "Notes: " + "; ".join(notes) + "."]
    out += ["", f"Reproduce: `{command}` (each model's result is kept in results/layer_probes_arms.json and "
                "reused; add `--fresh` to recompute; features are cached under /tmp)."]
    return "\n".join(out)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    base = {"pos": results["baselines"]["pos_most_frequent_tag"], "wic": results["baselines"]["wic_majority"]}
    for ax, task, title in zip(axes, ("pos", "wic"), ("POS (UD EWT test, UPOS acc.)", "Word sense (WiC test, acc.)"),
                               strict=True):
        for k, (name, r) in enumerate(results["models"].items()):
            res = r[task]
            color = f"C{k}"
            ax.plot([x["layer"] for x in res["layers"]], [100 * x["test"] for x in res["layers"]], "o-", color=color,
                    label=name)
            if res.get("mix"):
                ax.axhline(100 * res["mix"]["test"], color=color, ls="--", lw=1, label=f"{name} mix")
        ax.axhline(100 * base[task], color="gray", ls=":", lw=1, label="baseline")
        ax.set_xlabel("layer (0 = embeddings / char CNN)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--elmo", default=None, help="a trained ELMo folder (skipped with a reason when absent)")
    ap.add_argument("--models", default="minilm,bert-mlm-small", help="comma list: minilm, bert-mlm-small, or folders")
    ap.add_argument("--max-train-sentences", type=int, default=None, help="first N UD train sentences (quick run)")
    ap.add_argument("--max-wic-train", type=int, default=None, help="first N WiC train pairs (quick run)")
    ap.add_argument("--cache", default="/tmp/embedstack_layer_probes", help="feature cache folder (outside the repo)")
    ap.add_argument("--fresh", action="store_true", help="recompute models already in results/layer_probes_arms.json")
    ap.add_argument("--no-write", action="store_true",
                    help="print the section; write neither BENCHMARKS.md nor results/ (arms, JSON, plot)")
    args = ap.parse_args()
    os.environ.setdefault("EMBEDSTACK_DATA_DIR", "/work/shared/data")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")

    from embedstack.data import load_conllu, load_wic
    from embedstack.evaluation.layers import majority_class, most_frequent_tag

    data = {"ud": {s: load_conllu("ud-english-ewt", s) for s in ("train", "dev", "test")},
            "wic": {s: load_wic("wic", s) for s in ("train", "dev", "test")}}
    data["ud"]["train"] = data["ud"]["train"].head(args.max_train_sentences)
    data["wic"]["train"] = data["wic"]["train"].head(args.max_wic_train)
    settings = {"max_train_sentences": args.max_train_sentences, "max_wic_train": args.max_wic_train,
                "pos_l2": POS_L2, "wic_l2": WIC_L2, "probe": PROBE, "subword": "mean", "version": 1}
    ud, wic = data["ud"], data["wic"]
    baselines = {
        "pos_most_frequent_tag": most_frequent_tag(ud["train"].sentences, ud["train"].tags, ud["test"].sentences,
                                                   ud["test"].tags)["accuracy"],
        "wic_majority": majority_class(wic["train"].labels, wic["test"].labels)["accuracy"],
    }
    log(f"data: UD train {len(ud['train'])} sentences / {ud['train'].n_words} words; WiC train {len(wic['train'])}; "
        f"baselines POS {baselines['pos_most_frequent_tag']:.4f}, WiC {baselines['wic_majority']:.4f}")
    arms = load_arms(NAME)
    models: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name, model, folder, why in load_models(args):
        if model is None or folder is None:
            log(f"{name}: skipped ({why})")
            print(f"{name}: skipped — {why}", file=sys.stderr)
            skipped[name] = why
            continue
        arm = f"{name}:{_identity(folder)}:" + hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
        if arm in arms and not args.fresh:
            log(f"{name}: reusing {arm} from results/{NAME}_arms.json")
            models[name] = arms[arm]
            continue
        log(f"{name}: {folder}")
        models[name] = run_model(name, model, folder, data, args, settings)
        if not args.no_write:
            save_arm(NAME, arm, models[name])
    if not models:
        raise SystemExit("no model could be probed: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    cmd = "EMBEDSTACK_DATA_DIR=../shared/data .venv/bin/python benchmarks/layer_probes.py" + "".join(
        " " + a.replace(str(Path.home()), "~") for a in sys.argv[1:])
    results = {"models": models, "skipped": skipped, "baselines": baselines, "settings": settings, "command": cmd,
               "data": {"ud_train_sentences": len(ud["train"]), "ud_train_words": ud["train"].n_words,
                        "ud_test_words": ud["test"].n_words, "wic_train_pairs": len(wic["train"]),
                        "wic_test_pairs": len(wic["test"])},
               "paper": PAPER}
    md = markdown(results, skipped, cmd)
    if args.no_write:
        print(md)
        return
    plot(results, RESULTS / f"{NAME}.png")
    write_results(NAME, results, md)
    print(md)


if __name__ == "__main__":
    main()
