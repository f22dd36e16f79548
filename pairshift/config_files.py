"""Reading config files as the hostile input they may be: size caps, bounded YAML aliases, confined paths.

- :func:`read_capped` reads a file of at most ``PAIRSHIFT_MAX_CONFIG_BYTES`` (10 MB by default), refusing a
  bigger one before reading it.
- :func:`load_yaml` parses YAML with PyYAML's safe loader, refusing documents whose aliases would expand to
  more than :data:`MAX_ALIAS_NODES` extra nodes (a 537-byte "billion laughs" otherwise becomes gigabytes once
  validated and stored) and recursive aliases.
- :func:`confined` resolves a ``file://`` reference or a relative path inside a folder: an absolute path, a
  ``..`` that leaves the folder, or a symlink pointing out of it is refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

MAX_ALIAS_NODES = 10_000  # nodes that aliases may add to a document beyond what is written
DEFAULT_MAX_BYTES = 10_000_000
MAX_BYTES_ENV = "PAIRSHIFT_MAX_CONFIG_BYTES"


class UnsafeFile(ValueError):
    """A config file or reference refused for safety; the message is one line naming the file."""


def max_bytes() -> int:
    raw = os.environ.get(MAX_BYTES_ENV)
    try:
        return int(raw) if raw else DEFAULT_MAX_BYTES
    except ValueError:
        return DEFAULT_MAX_BYTES


def read_capped(path: Path, limit: int | None = None) -> str:
    """The file's UTF-8 text; :class:`UnsafeFile` when it is larger than ``limit`` (default: the setting)."""
    limit = limit or max_bytes()
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise UnsafeFile(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise UnsafeFile(f"{path}: larger than {limit:,} bytes (raise {MAX_BYTES_ENV} if it must be)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnsafeFile(f"{path}: not UTF-8 text (byte {exc.start})") from None


def _expanded_size(node: yaml.Node, memo: dict[int, int], active: set[int]) -> int:
    """Nodes in the document once every alias is expanded (shared nodes counted at each use)."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:
        raise UnsafeFile("a recursive YAML alias (an anchor used inside itself)")
    active.add(key)
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, memo, active) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, memo, active) + _expanded_size(v, memo, active) for k, v in node.value)
    active.discard(key)
    memo[key] = size  # memoized: linear in the nodes written, however far aliases would expand
    return size


class _BoundedLoader(yaml.SafeLoader):
    """The safe loader, refusing a document whose aliases expand past the bound before constructing it."""

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None:
            memo: dict[int, int] = {}
            expanded = _expanded_size(node, memo, set())
            if expanded - len(memo) > MAX_ALIAS_NODES:
                raise UnsafeFile(
                    f"YAML aliases expand to {expanded - len(memo):,} extra nodes, over the bound of "
                    f"{MAX_ALIAS_NODES:,} (an alias bomb?)"
                )
        return node


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` with bounded alias expansion (:class:`UnsafeFile` past the bound)."""
    return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass


def confined(folder: Path, ref: str) -> Path:
    """``ref`` (``file://x`` or ``x``) as a path inside ``folder``; :class:`UnsafeFile` when it leaves it."""
    raw = ref.removeprefix("file://")
    if not raw or Path(raw).is_absolute() or raw.startswith("~"):
        raise UnsafeFile(f"{ref!r}: only paths relative to {folder} are allowed")
    root = folder.resolve()
    path = (root / raw).resolve()
    if not path.is_relative_to(root):
        raise UnsafeFile(f"{ref!r} points outside {folder}: references stay inside the config's folder")
    return path
