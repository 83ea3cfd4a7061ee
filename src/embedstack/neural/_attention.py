"""embedstack's own attention kernel for inference (``_attention.c``), built at first use, with torch's as fallback.

At head dimension 32 (MiniLM) torch's ``scaled_dot_product_attention`` runs its two products as GEMMs too thin
for the GEMM kernels (about 60 GFLOP/s a thread here, a third of the GEMM rate), and attention takes about a
third of the time of a 240-token abstract. The C kernel tiles both products for this shape in registers (see
its header); the results equal torch's up to float32 summation order.

It is built once per machine with the system C compiler into ``<embedstack cache>/kernels`` (atomically, named
by a hash of the source, flags and compiler) and loaded with ctypes, which releases the GIL while it runs.
It runs where the CPU has AVX-512 (F, BW, VL, DQ), or AVX2 and FMA (the same tiles in 8-float registers, float32
states only, and none of the file's other kernels), and a C compiler is found; elsewhere, or with
``EMBEDSTACK_ATTENTION=torch``, :func:`available` is False and callers use torch's kernel. bfloat16 states take the
tile unit where the CPU has AMX, vdpbf16ps registers where it has AVX-512 BF16 and VBMI (Zen 4), else the float32
kernel, widened (``EMBEDSTACK_ATTENTION=f32`` forces that on a Zen 4, to compare).

Two torch operators wrap it, so compiled graphs (``torch.compile``) call it like any other operator:
``embedstack::attention`` (a padded batch (B, T, C) with an optional key mask) and ``embedstack::attention_rows``
(packed rows of several texts, each attending to its own keys).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import torch

__all__ = ["available", "attention", "attention_rows", "row_kernels", "status", "supports"]

log = logging.getLogger(__name__)

_SOURCE = Path(__file__).with_name("_attention.c")
_FLAGS = ("-O3", "-shared", "-fPIC", "-pthread", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma")
# OpenMP threads (torch's own runtime once torch is loaded: see run_parallel in the source); pthreads without it
_OPENMP = ("-fopenmp",)
_NEEDS = frozenset({"avx512f", "avx512bw", "avx512vl", "avx512dq", "fma"})
# CPUs without AVX-512: the attention kernel alone, in AVX2 registers (the source's #else branch)
_AVX2_FLAGS = ("-O3", "-shared", "-fPIC", "-pthread", "-mavx2", "-mfma")
_AVX2_NEEDS = frozenset({"avx2", "fma"})
# bfloat16 states on the tile unit (AMX): built in where the CPU has it and the compiler knows it (gcc >= 11)
_AMX_FLAGS = ("-mamx-tile", "-mamx-bf16", "-mavx512bf16", "-mavx512vbmi", "-DEMBEDSTACK_AMX", "-DEMBEDSTACK_BF16")
_AMX_NEEDS = frozenset({"amx_bf16", "avx512_bf16", "avx512vbmi"})  # vbmi: the softmax's byte table (vpermi2b)
# bfloat16 dot products in AVX-512 registers (Zen 4, Cooper Lake): SPLADE's pooling kernel where there is no AMX,
# and with VBMI (Zen 4) the bf16 attention kernel in registers (the tile kernel's algorithm with vdpbf16ps)
_BF16_FLAGS = ("-mavx512bf16", "-DEMBEDSTACK_BF16")
_BF16_NEEDS = frozenset({"avx512_bf16"})
_BF16_VBMI_FLAGS = ("-mavx512bf16", "-mavx512vbmi", "-DEMBEDSTACK_BF16")
_BF16_VBMI_NEEDS = frozenset({"avx512_bf16", "avx512vbmi"})
_MAX_DIM = 128
_lock = threading.Lock()
_state: dict[str, Any] = {"lib": None, "why": None, "checked": False, "avx2": False, "cpu_amx": False,
                          "bf16_dot": False}


def _compiler() -> str | None:
    for name in (os.environ.get("CC", ""), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def _build(flags: tuple[str, ...]) -> Path:
    """The shared library for this source, flags and compiler, compiled into the cache if it is not there yet."""
    from embedstack.data._registry import cache_dir
    from embedstack.errors import ConfigError
    from embedstack.io.atomic import AtomicFile

    cc = _compiler()
    if cc is None:
        raise ConfigError("no C compiler (cc, gcc or clang) on PATH")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False).stdout
    key = hashlib.sha256(_SOURCE.read_bytes() + " ".join(flags).encode() + version.encode()).hexdigest()[:16]
    target = cache_dir() / "kernels" / f"attention-{key}.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with AtomicFile(target) as f:  # concurrent builders: each renames its own complete file into place
        done = subprocess.run([cc, *flags, "-o", str(f.tmp), str(_SOURCE)], capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            raise ConfigError(f"{cc} failed to build {_SOURCE.name}: {done.stderr.strip()[:300]}")
    return target


def _load() -> Any:
    """The loaded library, or None (the reason in ``_state["why"]``); tried once per process."""
    if _state["checked"]:  # a plain read: compiled graphs trace this
        return _state["lib"]
    from embedstack._threads import cpu_features

    with _lock:
        if not _state["checked"]:
            _state["lib"], _state["why"] = _open()
            if _state["lib"] is not None:
                # read once: compiled graphs trace supports(), which must not call into the library
                _state["avx2"] = int(_state["lib"].embedstack_kernel_width()) == 256
                _state["cpu_amx"] = "amx_bf16" in cpu_features()  # the CPU's, whatever the build
                # bf16 states in vdpbf16ps registers (no AMX); EMBEDSTACK_ATTENTION=f32 widens them to float32 instead
                # (not on an AMX CPU whose tile build was refused: bf16 goes to torch's kernel there, see supports)
                _state["bf16_dot"] = (hasattr(_state["lib"], "embedstack_attention_bf16") and not _state["cpu_amx"]
                                      and os.environ.get("EMBEDSTACK_ATTENTION", "").lower() != "f32")
                _register()
            _state["checked"] = True
        return _state["lib"]


def _open() -> tuple[Any, str | None]:
    """(the library, None) or (None, why not)."""
    from embedstack._threads import cpu_features

    if os.environ.get("EMBEDSTACK_ATTENTION", "").lower() in ("torch", "sdpa", "0", "off"):
        return None, "EMBEDSTACK_ATTENTION=torch"
    missing = _NEEDS - cpu_features()
    if missing and not cpu_features() >= _AVX2_NEEDS:
        return None, f"this CPU lacks {', '.join(sorted(missing | (_AVX2_NEEDS - cpu_features())))}"
    lib, why = None, None
    tiers = [t for t, needs in ((_AMX_FLAGS, _AMX_NEEDS), (_BF16_VBMI_FLAGS, _BF16_VBMI_NEEDS),
                                (_BF16_FLAGS, _BF16_NEEDS)) if cpu_features() >= needs]
    # the richest build first: AMX, then AVX-512 BF16 with VBMI, then without (where the CPU has them; AMX refused by
    # the kernel: the next one), OpenMP where torch runs on it (an older compiler or no libgomp: the next one down);
    # AVX2 without AVX-512
    bases = [_AVX2_FLAGS] if missing else [_FLAGS + extra for extra in (*tiers, ())]
    for flags in [base + omp for base in bases for omp in (_OPENMP, ())]:
        if "-fopenmp" in flags and "OpenMP" not in torch.__config__.parallel_info():
            continue
        try:
            lib = ctypes.CDLL(str(_build(flags)))
        except Exception as exc:  # noqa: BLE001 - no compiler, a read-only cache: torch's kernel still works
            why = f"{type(exc).__name__}: {exc}"
            continue
        if "-DEMBEDSTACK_AMX" in flags and lib.embedstack_amx_init() != 0:  # the kernel refused the tile state
            lib = None
            continue
        break
    if lib is None:
        log.warning("embedstack's attention kernel is not available (%s); using torch's.", why)
        return None, why or "no build"
    i64p = ctypes.POINTER(ctypes.c_int64)
    common = [ctypes.c_void_p] * 5 + [i64p] * 4 + [ctypes.c_int64, ctypes.c_int, ctypes.c_int] + [ctypes.c_int64] * 4
    lib.embedstack_attention.restype = ctypes.c_int
    lib.embedstack_attention.argtypes = [*common, ctypes.c_int, ctypes.c_float, ctypes.c_int]
    p, i64, i = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    for name in ("embedstack_attention_amx", "embedstack_attention_x3", "embedstack_attention_bf16"):
        if hasattr(lib, name):
            getattr(lib, name).restype = ctypes.c_int
            getattr(lib, name).argtypes = [*common, ctypes.c_float, ctypes.c_int]
    if hasattr(lib, "embedstack_splade_max"):
        lib.embedstack_splade_max.restype = ctypes.c_int
        lib.embedstack_splade_max.argtypes = [p, p, i64, i64, i64, p, i64, p, p, i, i]
    if hasattr(lib, "embedstack_linear_x3"):
        lib.embedstack_linear_x3.restype = ctypes.c_int
        lib.embedstack_linear_x3.argtypes = [p, i64, i64, i64, p, p, i64, p, p, p, i64, i]
    for name, args in (("embedstack_quant_rows", [p, i64, i64, i64, p, p, p, i, i]),
                       ("embedstack_ffn_mid", [p, i64, i64, p, p, p, p, p, p, i, i]),
                       ("embedstack_rows_out", [p, i64, i64, p, p, p, i64, p, p, ctypes.c_float, p, i]),
                       ("embedstack_layer_norm_rows", [p, i64, i64, i64, p, p, ctypes.c_float, p, i])):
        if not hasattr(lib, name):  # the AVX2 build has the attention kernel alone
            continue
        getattr(lib, name).restype = ctypes.c_int
        getattr(lib, name).argtypes = args
    return lib, None


def _amx(lib: Any) -> bool:
    """Whether ``lib`` was built with the AMX entry point."""
    return hasattr(lib, "embedstack_attention_amx")


def _avx2() -> bool:
    """Whether the loaded library is the AVX2 build (float32 attention only; a plain read)."""
    return bool(_state.get("avx2", False))


def row_kernels() -> bool:
    """Whether the AVX-512 build's row kernels (:func:`quant_rows`, :func:`ffn_mid`, :func:`rows_out`,
    :func:`layer_norm_rows`) are here: the AVX2 build has the attention kernel alone."""
    lib = _load()
    return lib is not None and hasattr(lib, "embedstack_quant_rows")


def available() -> bool:
    """True when the kernel runs here (built and loaded on the first call)."""
    return _load() is not None


def status() -> str:
    """``"embedstack (avx512)"``, ``"embedstack (avx512, amx)"``, ``"embedstack (avx512, bf16 dot)"`` (bf16 states
    on AVX-512 BF16 dot products), ``"embedstack (avx2)"`` or why torch's kernel is used instead."""
    if not available():
        return f"torch ({_state['why']})"
    if _avx2():
        return "embedstack (avx2)"
    if _amx(_state["lib"]):
        return "embedstack (avx512, amx)"
    return "embedstack (avx512, bf16 dot)" if _state.get("bf16_dot") else "embedstack (avx512)"


def supports(q: Any, head_dim: int) -> bool:
    """Whether :func:`attention` takes these inputs and beats torch's kernel on them: float32 states (head dim a
    multiple of 16, at most 128), or bfloat16 ones. Where the CPU has AMX, bfloat16 goes to the tile kernel (head
    dim 32 or 64) or to torch's, which runs on AMX too and beats the AVX-512 kernel there (a Xeon with AMX, 32
    abstracts x 240 tokens x 12 heads, 2 threads: 13.7 against 18.7 ms). Without AMX, bfloat16 states take the
    AVX-512 BF16 dot-product kernel where the build has it (AVX-512 BF16 and VBMI: Zen 4; head dim 32 or 64; on
    Zen 4, one thread, 32 abstracts x 240 tokens x 12 heads of 32: 23.2 ms against 45.1 for the float32 kernel on
    the same states widened and 63.1 for torch's bf16 kernel; ``attention_zen4`` in BENCHMARKS.md), else the float32
    kernel, widened (torch's bf16 kernel was no faster than its float32 one on Zen 4, and ours beats both). The AVX2
    build takes float32 states only."""
    if not (head_dim % 16 == 0 and head_dim <= _MAX_DIM and q.device.type == "cpu" and available()):
        return False
    if q.dtype == torch.float32:
        return True
    if _avx2():
        return False
    # plain reads of what _load() stored: dynamo traces this, and warned about tracing the cached cpu_features()
    return q.dtype == torch.bfloat16 and (head_dim in (32, 64) if _amx(_state["lib"]) else
                                          not _state["cpu_amx"])


def _run(q: Any, k: Any, v: Any, out: Any, mask: Any, q_off: Any, q_len: Any, k_off: Any, k_len: Any,
         heads: int, x3: bool = False) -> None:
    lib = _load()
    i64p = ctypes.POINTER(ctypes.c_int64)

    def p64(t: Any) -> Any:
        return ctypes.cast(t.data_ptr(), i64p)

    dim = q.shape[-1] // heads
    args = (q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), None if mask is None else mask.data_ptr(),
            p64(q_off), p64(q_len), p64(k_off), p64(k_len), q_off.shape[0], heads, dim,
            q.stride(0), k.stride(0), v.stride(0), out.stride(0))
    bf16 = q.dtype == torch.bfloat16
    if bf16 and _amx(lib) and dim in (32, 64):
        rc = lib.embedstack_attention_amx(*args, dim ** -0.5, torch.get_num_threads())
    elif bf16 and _state.get("bf16_dot") and dim in (32, 64):
        rc = lib.embedstack_attention_bf16(*args, dim ** -0.5, torch.get_num_threads())
    elif x3 and not bf16 and hasattr(lib, "embedstack_attention_x3") and dim in (32, 64):
        rc = lib.embedstack_attention_x3(*args, dim ** -0.5, torch.get_num_threads())
    else:
        rc = lib.embedstack_attention(*args, int(bf16), dim ** -0.5, torch.get_num_threads())
    if rc == 1:  # a caller's bug: supports() says what the build takes
        raise ValueError(f"embedstack attention kernel ({status()}): it takes no {q.dtype} states of head dimension "
                         f"{dim}")
    if rc != 0:
        raise MemoryError("embedstack attention kernel: out of memory")


def _rows(t: Any) -> Any:
    """``t`` as a matrix of rows (N, C) whose last dimension is contiguous (a copy only if it is not)."""
    t = t.reshape(-1, t.shape[-1])
    return t if t.stride(-1) == 1 else t.contiguous()


def _register() -> None:
    """Register the two operators (once per process, when the library loads)."""
    # schemas spelled out: this module's annotations are strings (``from __future__ import annotations``)
    @torch.library.custom_op("embedstack::attention", mutates_args=(),
                             schema="(Tensor q, Tensor k, Tensor v, Tensor? mask, int heads, bool x3=False) -> Tensor")
    def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                   heads: int, x3: bool = False) -> torch.Tensor:
        B, Tq, C = q.shape
        Tk = k.shape[1]
        out = torch.empty((B, Tq, C), dtype=q.dtype)
        ar = torch.arange(B, dtype=torch.int64)
        m = None if mask is None else mask.reshape(B * Tk).to(torch.uint8).contiguous()
        _run(_rows(q), _rows(k), _rows(v), out.view(B * Tq, C), m, ar * Tq, torch.full((B,), Tq), ar * Tk,
             torch.full((B,), Tk), heads, x3)
        return out

    @_attention.register_fake
    def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, heads: int,
          x3: bool = False) -> torch.Tensor:
        return q.new_empty(q.shape)

    @torch.library.custom_op("embedstack::attention_rows", mutates_args=(),
                             schema="(Tensor q, Tensor k, Tensor v, Tensor q_off, Tensor q_len, Tensor k_off, "
                                    "Tensor k_len, int heads, bool x3=False) -> Tensor")
    def _attention_rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_off: torch.Tensor, q_len: torch.Tensor,
                        k_off: torch.Tensor, k_len: torch.Tensor, heads: int, x3: bool = False) -> torch.Tensor:
        out = torch.empty(q.shape, dtype=q.dtype)
        i64 = [t.to(torch.int64).contiguous() for t in (q_off, q_len, k_off, k_len)]
        _run(_rows(q), _rows(k), _rows(v), out, None, i64[0], i64[1], i64[2], i64[3], heads, x3)
        return out

    @_attention_rows.register_fake
    def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_off: torch.Tensor, q_len: torch.Tensor,
          k_off: torch.Tensor, k_len: torch.Tensor, heads: int, x3: bool = False) -> torch.Tensor:
        return q.new_empty(q.shape)


# --- row kernels of the int8 feed-forward (quantize.Int8FeedForward; see the end of _attention.c) ---------------

_ROW_MAX = 8192  # ROW_MAX in the source
_gelu_table: list[Any] = []


def gelu_table() -> Any:
    """Φ (the standard normal CDF) as a cubic on each of 32 segments of [-5.5, 5.5]: (4 × 32,) float32, c0 .. c3
    of every segment in its own coordinate u in [0, 1), fitted by least squares at 64 Chebyshev points (largest
    error of x Φ(x) against the exact GELU 2.5e-6 for |x| <= 20)."""
    if _gelu_table:  # built: no lock on the hot path (every feed-forward of every forward pass)
        return _gelu_table[0]
    with _lock:
        if not _gelu_table:
            import math

            import numpy as np

            u = (np.cos(np.pi * (np.arange(64) + 0.5) / 64) + 1) / 2
            coef = np.zeros((4, 32))
            for seg in range(32):
                x = -5.5 + (11.0 / 32.0) * (seg + u)
                phi = np.array([0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x])
                coef[:, seg] = np.polynomial.polynomial.polyfit(u, phi, 3)
            _gelu_table.append(torch.from_numpy(coef.astype(np.float32).reshape(-1).copy()))
    return _gelu_table[0]


def rows_supported(width: int) -> bool:
    """Whether the row kernels run here for rows of ``width`` channels."""
    return row_kernels() and width % 16 == 0 and width <= _ROW_MAX


def _ptr(t: Any | None) -> int | None:
    return None if t is None else t.data_ptr()


def _rows_of(x: Any) -> Any:
    """``x`` as (rows, width) with unit column stride (a copy only if it is not)."""
    x = x.reshape(-1, x.shape[-1])
    return x if x.stride(-1) == 1 else x.contiguous()


def _check(rc: int, what: str) -> None:
    if rc != 0:
        raise ValueError(f"embedstack row kernel {what}: unsupported row width")


def _need(what: str, t: Any | None, dtype: Any, shape: tuple[int, ...], rows_of: bool = False) -> None:
    """The kernels read raw memory: ``t`` must have ``dtype`` and ``shape`` (and, unless it is read through a row
    stride, be contiguous), or ValueError (a caller's bug, never a user's input)."""
    if t is None:
        return
    ok = t.dtype == dtype and tuple(t.shape) == shape and (rows_of or t.is_contiguous())
    if not ok:
        raise ValueError(f"embedstack row kernel: {what} must be a contiguous {dtype} tensor of shape {shape}; got "
                         f"{t.dtype} {tuple(t.shape)}{'' if t.is_contiguous() else ' (strided)'}")


def quant_rows(x: Any, inv_smooth: Any | None = None, unsigned: bool = False) -> tuple[Any, Any]:
    """bfloat16 ``x`` (..., K) times ``inv_smooth`` (K,) float32 -> (int8 (M, K), float32 scales (M,)): one
    symmetric scale per row, 127 levels a side (:func:`embedstack.neural.quantize.quantize_rows`, fused).
    ``unsigned``: the codes as uint8, plus 128 (the sign bit flipped in the same pass), for a product that takes
    them with zero point 128 (oneDNN's fast int8 rows on CPUs without AMX int8)."""
    x = _rows_of(x)
    rows, cols = x.shape
    _need("x", x, torch.bfloat16, (rows, cols), rows_of=True)
    _need("inv_smooth", inv_smooth, torch.float32, (cols,))
    q = torch.empty((rows, cols), dtype=torch.uint8 if unsigned else torch.int8)
    scale = torch.empty(rows, dtype=torch.float32)
    _check(_load().embedstack_quant_rows(x.data_ptr(), rows, cols, x.stride(0), _ptr(inv_smooth), q.data_ptr(),
                                         scale.data_ptr(), int(unsigned), torch.get_num_threads()), "quant_rows")
    return q, scale


def ffn_mid(y: Any, row_scale: Any, bias: Any | None, inv_smooth: Any | None,
            unsigned: bool = False) -> tuple[Any, Any]:
    """bfloat16 ``y`` (M, N) contiguous -> quant_rows(GELU(y * row_scale[:, None] + bias) * inv_smooth, unsigned)."""
    rows, cols = y.shape
    _need("y", y, torch.bfloat16, (rows, cols))
    _need("row_scale", row_scale, torch.float32, (rows,))
    for name, t in (("bias", bias), ("inv_smooth", inv_smooth)):
        _need(name, t, torch.float32, (cols,))
    q = torch.empty((rows, cols), dtype=torch.uint8 if unsigned else torch.int8)
    scale = torch.empty(rows, dtype=torch.float32)
    _check(_load().embedstack_ffn_mid(y.data_ptr(), rows, cols, row_scale.data_ptr(), _ptr(bias),
                                      gelu_table().data_ptr(), _ptr(inv_smooth), q.data_ptr(), scale.data_ptr(),
                                      int(unsigned), torch.get_num_threads()), "ffn_mid")
    return q, scale


def rows_out(y: Any, row_scale: Any, bias: Any | None, residual: Any | None = None,
             norm: tuple[Any, Any | None, float] | None = None) -> Any:
    """float32 ``y`` (M, N) contiguous -> bfloat16 ``y * row_scale[:, None] + bias (+ residual)``, then a
    LayerNorm when ``norm`` = (weight, bias or None, eps) is given (float32 parameters); ``residual`` bfloat16."""
    rows, cols = y.shape
    out = torch.empty((rows, cols), dtype=torch.bfloat16)
    res = None if residual is None else _rows_of(residual)
    gamma, beta, eps = norm if norm is not None else (None, None, 0.0)
    _need("y", y, torch.float32, (rows, cols))
    _need("row_scale", row_scale, torch.float32, (rows,))
    _need("residual", res, torch.bfloat16, (rows, cols), rows_of=True)
    for name, t in (("bias", bias), ("norm weight", gamma), ("norm bias", beta)):
        _need(name, t, torch.float32, (cols,))
    _check(_load().embedstack_rows_out(y.data_ptr(), rows, cols, row_scale.data_ptr(), _ptr(bias), _ptr(res),
                                       0 if res is None else res.stride(0), _ptr(gamma), _ptr(beta), float(eps),
                                       out.data_ptr(), torch.get_num_threads()), "rows_out")
    return out


def layer_norm_rows(x: Any, weight: Any, bias: Any | None, eps: float) -> Any:
    """torch's ``layer_norm`` over the last dimension of bfloat16 ``x`` (float32 ``weight`` and ``bias``), in one
    pass a row: (..., C) bfloat16."""
    rows = _rows_of(x)
    _need("x", rows, torch.bfloat16, tuple(rows.shape), rows_of=True)
    for name, t in (("weight", weight), ("bias", bias)):
        _need(name, t, torch.float32, (rows.shape[1],))
    out = torch.empty(rows.shape, dtype=torch.bfloat16)
    _check(_load().embedstack_layer_norm_rows(rows.data_ptr(), rows.shape[0], rows.shape[1], rows.stride(0),
                                              weight.data_ptr(), _ptr(bias), float(eps), out.data_ptr(),
                                              torch.get_num_threads()), "layer_norm_rows")
    return out.view(x.shape)


def splade_supported(width: int) -> bool:
    """Whether :func:`splade_max` runs here (a build with AMX or AVX-512 BF16) for token states of ``width``
    channels."""
    lib = _load()
    return lib is not None and hasattr(lib, "embedstack_splade_max") and width % 32 == 0 and width <= 1024


def splade_kind() -> str | None:
    """Which way :func:`splade_max` makes its products here: ``"amx"``, ``"avx512-bf16"`` or None (not built)."""
    lib = _load()
    if lib is None or not hasattr(lib, "embedstack_splade_max"):
        return None
    return "amx" if _amx(lib) else "avx512-bf16"


def pack_decoder(weight: Any) -> Any:
    """A decoder ``weight`` (V, C) as :func:`splade_max` reads it: bfloat16 term blocks of 16, each (C/2, 16, 2),
    V padded with zero rows to a multiple of 32."""
    vocab, width = weight.shape
    padded = (vocab + 31) // 32 * 32
    w = torch.zeros((padded, width), dtype=torch.bfloat16)
    w[:vocab] = weight.detach()
    return w.view(padded // 16, 16, width // 2, 2).permute(0, 2, 1, 3).contiguous()


def splade_max(x: Any, mask: Any, packed: Any, bias: Any, *, tiles: bool | None = None) -> Any:
    """``max_t (x[b, t] · W[v]) + bias[v]`` over each text's tokens where ``mask`` is true, without making the
    logits: bfloat16 ``x`` (B, T, C), bool ``mask`` (B, T), ``packed`` from :func:`pack_decoder`, float32 ``bias``
    (V,). Returns float32 (B, V); ``-inf`` for a text with no token. Products in bf16, sums in float32: on the AMX
    tiles where the build has them (``tiles=None``), else (or with ``tiles=False``) in AVX-512 BF16 registers."""
    lib = _load()
    if lib is None or not hasattr(lib, "embedstack_splade_max"):
        raise ValueError(f"embedstack's SPLADE kernel does not run here ({splade_kind() or _state['why'] or 'no AVX-512 BF16'})")
    amx = _amx(lib) if tiles is None else bool(tiles)
    if amx and not _amx(lib):
        raise ValueError("embedstack's SPLADE kernel: tiles=True needs the AMX build (this CPU or build has no AMX)")
    for name, tensor in (("bias", bias), ("packed", packed)):
        if tensor is None:
            raise ValueError(f"embedstack's SPLADE kernel: {name} is required")
    b, t, c = x.shape
    vocab = int(bias.shape[0])
    if c % 32 or c > 1024 or b < 1 or vocab < 1:
        raise ValueError(f"embedstack's SPLADE kernel takes 32 to 1,024 channels in steps of 32 and at least one text "
                         f"and term; got {b} texts x {c} channels, {vocab} terms")
    _need("bias", bias, torch.float32, (vocab,))
    _need("packed", packed, torch.bfloat16, ((vocab + 31) // 32 * 2, c // 2, 16, 2))
    tp = (t + 31) // 32 * 32
    if tp == t and x.dtype == torch.bfloat16 and x.is_contiguous():
        xs = x  # no padding rows to add: read in place
    else:
        xs = torch.zeros((b, tp, c), dtype=torch.bfloat16)
        xs[:, :t] = x
    ms = torch.zeros((b, tp), dtype=torch.uint8)
    ms[:, :t] = mask
    out = torch.empty((b, vocab), dtype=torch.float32)
    rc = lib.embedstack_splade_max(xs.data_ptr(), ms.data_ptr(), b, tp, c, packed.data_ptr(), vocab, bias.data_ptr(),
                                   out.data_ptr(), int(amx), torch.get_num_threads())
    if rc != 0:
        raise MemoryError("embedstack's SPLADE kernel: out of memory") if rc == 2 else ValueError(
            f"embedstack's SPLADE kernel refused its inputs (code {rc})")
    return out


def x3_supported(in_features: int, out_features: int) -> bool:
    """Whether :func:`linear_x3` runs here (the AMX build) for a linear layer of this shape (both sides multiples
    of 32, at most 8,192 inputs)."""
    lib = _load()
    return (lib is not None and hasattr(lib, "embedstack_linear_x3") and in_features % 32 == 0
            and out_features % 32 == 0 and 32 <= in_features <= 8192 and out_features >= 32)


def pack_x3(weight: Any) -> tuple[Any, Any]:
    """A float32 ``weight`` (N, K) as :func:`linear_x3` reads it: its bfloat16 rounding and the bfloat16 rounding
    of what that leaves out, each packed as :func:`pack_decoder` packs (N a multiple of 32)."""
    if weight.shape[0] % 32 or weight.shape[1] % 32:
        raise ValueError(f"embedstack's x3 linear takes widths in multiples of 32; got {tuple(weight.shape)}")
    w = weight.detach().float()
    high = w.to(torch.bfloat16)
    return pack_decoder(high), pack_decoder(w - high.float())


def linear_x3(x: Any, packed: tuple[Any, Any], bias: Any | None, *, gelu: bool = False) -> Any:
    """``x Wᵀ + bias`` for float32 ``x`` (..., K) to float32 accuracy on the AMX tiles, as three bf16 products
    (``x_h W_hᵀ + x_h W_lᵀ + x_l W_hᵀ``; see ``embedstack_linear_x3`` in _attention.c). ``packed`` from
    :func:`pack_x3`; ``bias`` float32 (N,) or None; ``gelu``: GELU (erf form) applied in the kernel, by the row
    kernels' cubic segments (2.5e-6 of the exact GELU at most). Returns float32 (..., N)."""
    high, low = packed
    n, k = high.shape[0] * 16, high.shape[1] * 2
    if x.device.type != "cpu":
        raise ValueError(f"embedstack's x3 linear runs on CPU tensors; got one on {x.device}")
    lead = x.shape[:-1]
    rows = _rows_of(x)
    m = rows.shape[0]
    if not x3_supported(k, n):
        raise ValueError(f"embedstack's x3 linear does not run here for {k} -> {n} (AMX build: "
                         f"{_amx(_load()) if _load() is not None else False})")
    _need("x", rows, torch.float32, (m, k), rows_of=True)
    for name, t in (("packed high", high), ("packed low", low)):
        _need(name, t, torch.bfloat16, (n // 16, k // 2, 16, 2))
    _need("bias", bias, torch.float32, (n,))
    out = torch.empty((m, n), dtype=torch.float32)
    if m:
        rc = _load().embedstack_linear_x3(rows.data_ptr(), m, k, rows.stride(0), high.data_ptr(), low.data_ptr(), n,
                                          _ptr(bias), gelu_table().data_ptr() if gelu else None, out.data_ptr(),
                                          n, torch.get_num_threads())
        if rc != 0:
            raise MemoryError("embedstack's x3 linear: out of memory") if rc == 2 else ValueError(
                f"embedstack's x3 linear refused its inputs (code {rc})")
    return out.view(*lead, n)


def _require() -> None:
    if _load() is None:
        from embedstack.errors import ConfigError

        raise ConfigError(f"embedstack's attention kernel does not run here ({_state['why']}); use torch's "
                          "(BertModel.set_attention('sdpa')).")


def attention(q: Any, k: Any, v: Any, mask: Any, heads: int, x3: bool = False) -> Any:
    """Self-attention of a padded batch: ``q`` (B, Tq, C), ``k`` and ``v`` (B, Tk, C), heads side by side in C;
    ``mask`` (B, Tk) bool, True where a key may be attended to, or None. Returns (B, Tq, C) in q's dtype.
    ``x3``: float32 states' two products as three bf16 products each on the AMX tiles (precision fp32-bf16x3;
    float32's kernel where the build has no tiles or the head dimension is not 32 or 64)."""
    _require()
    return torch.ops.embedstack.attention(q, k, v, mask, heads, x3)


def attention_rows(q: Any, k: Any, v: Any, q_off: Any, q_len: Any, k_off: Any, k_len: Any, heads: int,
                   x3: bool = False) -> Any:
    """Attention of packed texts: text b's queries are rows ``q_off[b] : q_off[b] + q_len[b]`` of ``q`` (N, C),
    its keys and values rows ``k_off[b] : k_off[b] + k_len[b]`` of ``k`` and ``v``; int64 offsets. Returns (N, C).
    ``x3`` as for :func:`attention`."""
    _require()
    return torch.ops.embedstack.attention_rows(q, k, v, q_off, q_len, k_off, k_len, heads, x3)


if __name__ == "__main__":  # pragma: no cover - `python -m embedstack.neural._attention`: build and report
    sys.stderr.write(status() + "\n")
