"""Data is never lost by transformer writers: streamed ``encode --out``, model folders (issue 10)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from embedstack.cli.app import app
from embedstack.errors import FormatError, OutputExistsError

runner = CliRunner()
GOOD = ["the cat sat on the mat", "a big red house", "the quick brown fox", "a dog ran over the tree"]


@pytest.fixture
def model_dir(tmp_path: Path, tiny_encoder) -> Path:  # type: ignore[no-untyped-def]
    return tiny_encoder.save(tmp_path / "tiny-model")


@pytest.fixture
def good_npy(tmp_path: Path, model_dir: Path) -> Path:
    src = tmp_path / "good.txt"
    src.write_text("\n".join(GOOD) + "\n", encoding="utf-8")
    out = tmp_path / "out" / "good.npy"
    res = runner.invoke(app, ["encode", "-m", str(model_dir), str(src), "-o", str(out), "-q"])
    assert res.exit_code == 0, res.output
    assert np.load(out).shape[0] == len(GOOD)
    return out


def _siblings(p: Path) -> list[str]:
    return sorted(x.name for x in p.parent.iterdir())


def test_encode_bad_bytes_leave_the_old_file_identical(tmp_path: Path, model_dir: Path, good_npy: Path) -> None:
    before = good_npy.read_bytes()
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("the cat\ncaf\xe9 au lait\n".encode("latin-1"))
    res = runner.invoke(app, ["encode", "-m", str(model_dir), str(bad), "-o", str(good_npy), "-q"])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    assert good_npy.read_bytes() == before
    assert _siblings(good_npy) == ["good.npy"]


@pytest.mark.parametrize("streamed", [False, True])
def test_interrupted_encode_leaves_the_old_file_identical(tiny_encoder, good_npy: Path, streamed: bool) -> None:  # type: ignore[no-untyped-def]
    before = good_npy.read_bytes()

    def ctrl_c(done: int) -> None:
        raise KeyboardInterrupt

    texts = GOOD * 50
    with pytest.raises(KeyboardInterrupt):
        tiny_encoder.encode(iter(texts) if streamed else texts, out=good_npy, batch_size=8, chunk_size=16,
                            progress=ctrl_c)
    assert good_npy.read_bytes() == before
    assert _siblings(good_npy) == ["good.npy"]
    vecs = tiny_encoder.encode(iter(texts) if streamed else texts, out=good_npy, batch_size=8, chunk_size=16)
    assert vecs.shape == (len(texts), tiny_encoder.dim)
    assert np.allclose(np.load(good_npy), tiny_encoder.encode(texts), atol=1e-5)


def test_encode_refuses_a_folder_as_out(tmp_path: Path, model_dir: Path) -> None:
    src = tmp_path / "good.txt"
    src.write_text("\n".join(GOOD) + "\n", encoding="utf-8")
    folder = tmp_path / "vectors.npy"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    res = runner.invoke(app, ["encode", "-m", str(model_dir), str(src), "-o", str(folder), "-q"])
    assert res.exit_code == 2, res.output
    assert "--force" in res.output and "Traceback" not in res.output
    assert (folder / "notes.txt").read_text() == "mine"
    res = runner.invoke(app, ["encode", "-m", str(model_dir), str(src), "-o", str(folder), "-q", "--force"])
    assert res.exit_code == 0, res.output
    assert folder.is_file() and np.load(folder).shape[0] == len(GOOD)  # exactly the named path was replaced


def test_model_folder_guard_and_checksums(tmp_path: Path, tiny_encoder, model_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from embedstack.neural.sentence import SentenceEncoder

    tiny_encoder.save(model_dir)  # over its own earlier save: fine
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="force=True"):
        tiny_encoder.save(precious)
    assert (precious / "notes.txt").read_text() == "mine"
    weights = model_dir / "model.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as fh:
        fh.seek(size - 64)
        fh.write(b"\x7f" * 16)
    with pytest.raises(FormatError, match=r"model\.safetensors"):
        SentenceEncoder.from_folder(model_dir)
    assert SentenceEncoder.from_folder(model_dir, verify=False).dim == tiny_encoder.dim


@pytest.mark.slow
def test_ctrl_c_in_a_real_encode_process_leaves_the_old_file(tmp_path: Path, model_dir: Path, good_npy: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    before = good_npy.read_bytes()
    src = tmp_path / "many.txt"
    src.write_text("\n".join(GOOD * 20000) + "\n", encoding="utf-8")
    args = ["encode", "-m", str(model_dir), str(src), "-o", str(good_npy), "-q", "--batch-size", "8"]
    proc = subprocess.Popen([sys.executable, "-c", "from embedstack.cli.app import main; main()", *args],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if any(p.name.endswith(".tmp") for p in good_npy.parent.iterdir()):  # the streamed write has begun
            break
        time.sleep(0.01)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert good_npy.read_bytes() == before
    assert _siblings(good_npy) == ["good.npy"]
