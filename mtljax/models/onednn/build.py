"""Building and loading the oneDNN convolution library (conv.cc beside this file).

The C++ is compiled once, on first use, against the oneDNN of the pip packages `onednn-cpu-gomp`
(the library, GNU OpenMP threads) and `onednn-devel-cpu-gomp` (its headers) and the XLA FFI
headers of the installed jaxlib, into `$XDG_CACHE_HOME/mtljax/onednn/<hash>/` (default
`~/.cache`). The hash covers the source, the compiler command and the jaxlib/oneDNN versions, so
an upgrade builds anew; the file is compiled under a temporary name and renamed, so a concurrent
process (pytest workers) never loads half a library. Compiling on first use rather than in the
build backend keeps `pip install -e .` a pure-Python install (no compiler needed to install, and
the wheel of oneDNN the user already has is the one linked).

Why pip's `onednn-cpu-gomp` 2023.2 and not the newer `onednn` package: that one is Intel's SYCL
build, whose CPU engine needs the OpenCL CPU runtime (about 2 GB of further packages, and an ICD
environment variable) before it finds a CPU at all.

When anything fails (`MTLJAX_ONEDNN=0`, no package, no compiler, a compile or load error), `load`
prints one line on stderr saying why and returns False; the convolutions then run XLA's.

`stats()` reads the library's counters of the work it did (problems, time in the convolutions
and in the kernel reorders, primitive cache misses, calling threads): what
profiling/benchmarks/attribution_profile.py reports beside the per-op profile.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conv.cc")
LIBRARY = "libmtljax_onednn.so"
TARGETS = (
  "mtljax_onednn_conv_fwd",
  "mtljax_onednn_conv_bwd_data",
  "mtljax_onednn_conv_bwd_weights",
)
# Set to "0" to keep oneDNN off (XLA's convolutions run): the switch CI runs the tests both ways with.
ENV_SWITCH = "MTLJAX_ONEDNN"
KINDS = ("fwd", "bwd_data", "bwd_weights")
# conv.cc's counters, in its order: per kind, then the cache, callers and executor wait.
STATS = (
  *(f"{what}_{k}" for what in ("calls", "problems", "conv_ns", "reorder_ns", "reorder_bytes")
    for k in KINDS),
  "plan_misses", "plan_hits", "caller_threads", "wait_ns",
)  # fmt: skip
_LIB: list = []  # the loaded library (ctypes), once `load` succeeded


class Unavailable(Exception):
  """Why the library cannot be built or loaded (one line)."""


def _dist_file(dist: str, suffix: str) -> str:
  """The installed file of package `dist` whose path ends with `suffix`."""
  try:
    files = importlib.metadata.distribution(dist).files or []
  except importlib.metadata.PackageNotFoundError:
    raise Unavailable(f"the package {dist} is not installed") from None
  for f in files:
    path = os.path.realpath(f.locate())
    if path.replace(os.sep, "/").endswith(suffix) and os.path.exists(path):
      return path
  raise Unavailable(f"the package {dist} has no {suffix}")


def _paths() -> tuple[str, str]:
  """(include dir, lib dir) of the installed oneDNN."""
  header = _dist_file("onednn-devel-cpu-gomp", "include/oneapi/dnnl/dnnl.hpp")
  lib = _dist_file("onednn-cpu-gomp", "/libdnnl.so.3")
  return os.path.dirname(os.path.dirname(os.path.dirname(header))), os.path.dirname(lib)


def _cache_dir() -> str:
  root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(root, "mtljax", "onednn")


def _command(out: str) -> list[str]:
  import jax

  include, libdir = _paths()
  cxx = os.environ.get("CXX", "g++")
  if not shutil.which(cxx):
    raise Unavailable(f"no C++ compiler ({cxx}) on PATH")
  return [
    cxx, "-O2", "-std=c++17", "-shared", "-fPIC", "-w", SOURCE, "-o", out,
    f"-I{include}", f"-I{jax.ffi.include_dir()}",
    f"-L{libdir}", f"-Wl,-rpath,{libdir}", "-l:libdnnl.so.3",
  ]  # fmt: skip


def library_path() -> str:
  """The compiled library, built now if the cache lacks it (raises Unavailable)."""
  import jax

  with open(SOURCE, "rb") as f:
    key = hashlib.sha256(f.read())
  key.update(" ".join(_command("OUT")).encode())
  key.update(jax.__version__.encode())
  for dist in ("onednn-cpu-gomp", "jaxlib"):
    key.update(importlib.metadata.version(dist).encode())
  folder = os.path.join(_cache_dir(), key.hexdigest()[:16])
  path = os.path.join(folder, LIBRARY)
  if os.path.exists(path):
    return path
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=LIBRARY + ".", dir=folder)
  os.close(fd)
  try:
    res = subprocess.run(_command(tmp), capture_output=True, text=True)
    if res.returncode:
      first = next((l for l in res.stderr.splitlines() if "error" in l), res.stderr.strip())
      raise Unavailable(f"compiling {os.path.basename(SOURCE)} failed: {first[:300]}")
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


@functools.cache
def load() -> bool:
  """Build (once per machine) and load the library and register its FFI targets with jax; False,
  after one line on stderr saying why, when that is not possible."""
  try:
    if os.environ.get(ENV_SWITCH, "1") == "0":
      raise Unavailable(f"{ENV_SWITCH}=0")
    lib = ctypes.CDLL(library_path())
    import jax

    for name in TARGETS:
      jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, name)), platform="cpu")
  except (Unavailable, OSError) as e:
    print(f"mtljax: oneDNN convolutions unavailable ({e}); XLA's convolution runs", file=sys.stderr)
    return False
  _LIB.append(lib)
  return True


def stats(reset: bool = False) -> dict[str, int]:
  """The library's counters since it loaded (or since the last `reset=True`), by `STATS` name;
  empty when it is not loaded. The time counters are nanoseconds of the executor thread."""
  if not _LIB:
    return {}
  out = (ctypes.c_int64 * len(STATS))()
  _LIB[0].mtljax_onednn_stats(out, ctypes.c_int64(len(STATS)), ctypes.c_int64(int(reset)))
  return dict(zip(STATS, out))
