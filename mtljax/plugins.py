"""Plug-ins from outside mtljax: a registry name may also be ``package.module:ATTRIBUTE``.

Every registry that a config names things from (datasets, encoders, heads, fusions, task kinds,
attribution methods, explanation-loss kinds, objective terms) accepts, besides its registered
names, a reference to an attribute of any importable module: the user's own package extends
mtljax without editing it. ``lookup(registry, name, what)`` is the one way such a name is
resolved: the registered entry, else the imported attribute. A reference that does not import or
has no such attribute is a ``ConfigError`` naming it and why.
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping

from mtljax.errors import ConfigError


def is_reference(name: Any) -> bool:
  """``name`` has the form ``package.module:ATTRIBUTE``."""
  if not isinstance(name, str) or name.count(":") != 1:
    return False
  module, attr = name.split(":")
  return bool(module) and bool(attr) and all(p.isidentifier() for p in module.split("."))


def load(ref: str, what: str = "plug-in") -> Any:
  """The attribute ``ref`` (``package.module:ATTRIBUTE``) names, imported."""
  if not is_reference(ref):
    raise ConfigError(f"{what} {ref!r} is neither registered nor a package.module:ATTRIBUTE")
  module, attr = ref.split(":")
  try:
    mod = importlib.import_module(module)
  except ImportError as e:
    raise ConfigError(f"{what} {ref!r}: cannot import {module!r} ({e})") from e
  try:
    return getattr(mod, attr)
  except AttributeError:
    raise ConfigError(f"{what} {ref!r}: module {module!r} has no attribute {attr!r}") from None


def lookup(registry: Mapping[str, Any], name: str, what: str) -> Any:
  """``registry[name]``, or the plug-in ``name`` refers to (``package.module:ATTRIBUTE``)."""
  if name in registry:
    return registry[name]
  if is_reference(name):
    return load(name, what)
  raise ConfigError(f"{what} {name!r} is not one of {sorted(registry)} (or package.module:ATTR)")


def known(registry: Mapping[str, Any], name: Any, what: str) -> str | None:
  """None when ``name`` is registered or a loadable plug-in, else the problem (for checks that
  collect every problem)."""
  try:
    lookup(registry, name, what)
  except ConfigError as e:
    return str(e)
  return None


def register(registry: dict, name: Any, what: str, expected: type | None = None) -> str | None:
  """Add the plug-in ``name`` (``package.module:ATTRIBUTE``) to ``registry`` under that name, so
  that every later lookup by name finds it; a registered name or a plain name is left alone (the
  registry's own check reports an unknown one). Returns the problem, or None.

  expected: the type the attribute must be an instance of (or, for a class, a subclass of)."""
  if not is_reference(name) or name in registry:
    return None
  try:
    entry = load(name, what)
  except ConfigError as e:
    return str(e)
  if expected is not None:
    ok = issubclass(entry, expected) if isinstance(entry, type) else isinstance(entry, expected)
    if not ok:
      return f"{what}={name!r} is a {type(entry).__name__}, not a {expected.__name__}"
  registry[name] = entry
  return None
