"""A checkpoint step's integrity manifest (`<step>/mtljax_manifest.json`: each file's size and
CRC-32, the step, the run's config and its fingerprint, a SHA-256 of the manifest itself) and the
config recorded with a run's steps. See mtljax/checkpoint/__init__.py for when they are written
and checked.

The config recorded with each step (`config_record`, in the step's metadata and manifest) is what
a resume compares the current config against (`recorded_config`, train/build.py): config.json
may be missing, edited or replaced without changing what a resume accepts."""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mtljax import fileio

MANIFEST = "mtljax_manifest.json"


class _Damage(Exception):
  """One step's files are not what was saved; the message says which and how."""


# ============================================================================ config record
def fingerprint(config_dict: dict) -> str:
  """A short SHA-256 of the resolved config (canonical JSON)."""
  text = json.dumps(config_dict, sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_record(config) -> dict[str, Any]:
  """`{"config": <the resolved config as JSON>, "fingerprint": ...}` of an ml_collections config,
  recorded with every step a run saves."""
  as_dict = json.loads(config.to_json_best_effort())
  return {"config": as_dict, "fingerprint": fingerprint(as_dict)}


def _valid_record(rec) -> bool:
  return (
    isinstance(rec, dict)
    and isinstance(rec.get("config"), dict)
    and rec.get("fingerprint") == fingerprint(rec["config"])
  )


def _step_dirs(directory: str, which: str) -> list[tuple[int, str]]:
  folder = os.path.join(directory, which)
  if not os.path.isdir(folder):
    return []
  steps = sorted((int(n) for n in os.listdir(folder) if n.isdigit()), reverse=True)
  return [(s, os.path.join(folder, str(s))) for s in steps]


def recorded_config(directory: str) -> tuple[dict, str] | None:
  """`(config, where)`: the config recorded with the newest step of `directory` (a workdir's
  `checkpoints/`) whose record is intact (its fingerprint matches), from its manifest or its
  metadata; `latest/` first, then `best/`. None for checkpoints from before configs were recorded."""
  for which in ("latest", "best"):
    for step, d in _step_dirs(directory, which):
      for read in (lambda: read_manifest(d), lambda: _read_json(os.path.join(d, "meta/metadata"))):
        try:
          doc = read()
        except (_Damage, OSError, ValueError):
          continue
        rec = (doc or {}).get("run_config") if doc else None
        if _valid_record(rec):
          return rec["config"], f"{directory}/{which}/{step}"
  return None


# ============================================================================ manifest
def _read_json(path: str):
  with open(path) as f:
    return json.load(f)


def _crc32(path: str) -> int:
  crc = 0
  with open(path, "rb") as f:
    while chunk := f.read(1 << 20):
      crc = zlib.crc32(chunk, crc)
  return crc


def _files(step_dir: str) -> list[str]:
  """Every file of a step (relative paths), without the manifest and its temporary files."""
  out = []
  for root, _, names in os.walk(step_dir):
    for name in names:
      rel = os.path.relpath(os.path.join(root, name), step_dir)
      if rel != MANIFEST and not (rel.startswith(f".{MANIFEST}.") and rel.endswith(".tmp")):
        out.append(rel)
  return sorted(out)


def _self_hash(body: dict) -> str:
  text = json.dumps(body, sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode()).hexdigest()


def write_manifest(step_dir: str, step: int, record: dict | None) -> str:
  """Writes `<step_dir>/mtljax_manifest.json` atomically (see the module docstring)."""
  files = {
    rel: {"size": os.path.getsize(os.path.join(step_dir, rel)), "crc32": _crc32(p)}
    for rel in _files(step_dir)
    if (p := os.path.join(step_dir, rel))
  }
  body = {"step": int(step), "data_position": int(step), "files": files}
  if record is not None:
    body["config_fingerprint"] = record["fingerprint"]
    body["run_config"] = record
  body["sha256"] = _self_hash(body)
  return fileio.write_json(os.path.join(step_dir, MANIFEST), body, fault="ckpt.manifest.rename")


def read_manifest(step_dir: str) -> dict | None:
  """The step's manifest, None when it has none; `_Damage` when it is unreadable or altered."""
  path = os.path.join(step_dir, MANIFEST)
  if not os.path.exists(path):
    return None
  try:
    doc = _read_json(path)
  except (OSError, ValueError) as e:
    raise _Damage(f"{MANIFEST} is unreadable ({e})") from None
  if not isinstance(doc, dict) or doc.get("sha256") != _self_hash(
    {k: v for k, v in doc.items() if k != "sha256"}
  ):
    raise _Damage(f"{MANIFEST} does not match its own checksum")
  return doc


def verify_files(step_dir: str, manifest: dict, checksums: bool) -> list[str]:
  """What differs between a step's files and its manifest: missing or resized files always, and
  contents (CRC-32) when `checksums`."""
  problems = []
  for rel, want in sorted(manifest.get("files", {}).items()):
    path = os.path.join(step_dir, rel)
    if not os.path.isfile(path):
      problems.append(f"{rel} is missing")
    elif (size := os.path.getsize(path)) != want["size"]:
      problems.append(f"{rel} has {size} bytes, {want['size']} were written")
    elif checksums and _crc32(path) != want["crc32"]:
      problems.append(f"{rel} has changed (checksum)")
  return problems


def _all_finite(state) -> bool:
  """Whether every float array of `state` is finite, on the host: this process's shards, read
  once (a jitted check per leaf would compile one kernel per shape, seconds for a ResNet)."""
  for x in jax.tree.leaves(state):
    if not (hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)):
      continue
    shards = [s.data for s in x.addressable_shards] if hasattr(x, "addressable_shards") else [x]
    if not all(np.isfinite(np.asarray(d)).all() for d in shards):
      return False
  return True
