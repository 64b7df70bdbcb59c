"""Write presets as TOML files, whole or not at all (tomllib only reads; this is its inverse for presets).

:func:`dumps` writes the values a preset holds (text, whole numbers, booleans,
tables, lists, lists of tables) so that ``tomllib.loads(dumps(data)) == data``;
``None`` means "not set" and is left out, as a preset file leaves a key out (and
so is a table with nothing set in it: ``[sections]`` with no overrides).
:func:`write_atomic` puts a file in place with one rename, so a reader (another
process checking the folder) sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import re
import tempfile
from contextlib import suppress
from pathlib import Path

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


class TomlValueError(ValueError):
    """A value TOML cannot hold, and the dotted key it was found at."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key, self.reason = key, reason


def _key(name: str) -> str:
    """A key as TOML writes it: bare when it can be, else quoted."""
    return name if _BARE_KEY.match(name) else _string(name, name)


def _char(char: str, key: str) -> str:
    """One character of a basic string: escaped when TOML says it must be (controls, quote, backslash)."""
    if char in _ESCAPES:
        return _ESCAPES[char]
    code = ord(char)
    if 0xD800 <= code <= 0xDFFF:
        raise TomlValueError(key, "must be text (it holds a lone surrogate, which no file can store)")
    return f"\\u{code:04X}" if code < 0x20 or code == 0x7F else char


def _string(text: str, key: str) -> str:
    """A TOML basic string."""
    return '"' + "".join(_char(char, key) for char in text) + '"'


def _value(value, key: str) -> str:
    """A value written inline: a scalar, an array or an inline table."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _string(value, key)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(item, f"{key}.{index}") for index, item in enumerate(value)) + "]"
    if isinstance(value, dict):
        pairs = [f"{_key(name)} = {_value(inner, f'{key}.{name}')}" for name, inner in value.items()
                 if inner is not None]
        return "{ " + ", ".join(pairs) + " }" if pairs else "{}"
    raise TomlValueError(key, f"cannot be written to a preset file ({type(value).__name__})")


def _tables_of(value) -> bool:
    """Whether a list is written as an array of tables (``[[key]]``): a non-empty list of tables."""
    return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)


def _own(value) -> bool:
    """Whether a value is a key of its own table (not a sub-table, an array of tables or unset)."""
    return value is not None and not isinstance(value, dict) and not _tables_of(value)


def _table(data: dict, path: tuple[str, ...], lines: list[str]) -> None:
    """A table's own keys, then its sub-tables, then its arrays of tables (TOML's order)."""
    for name, value in data.items():
        if _own(value):
            lines.append(f"{_key(name)} = {_value(value, '.'.join((*path, name)))}")
    for name, value in data.items():
        if isinstance(value, dict) and any(inner is not None for inner in value.values()):
            header = ".".join(_key(part) for part in (*path, name))
            if any(_own(inner) for inner in value.values()):
                lines.extend(["", f"[{header}]"])
            _table(value, (*path, name), lines)
    for name, value in data.items():
        if _tables_of(value):
            header = ".".join(_key(part) for part in (*path, name))
            for item in value:
                lines.extend(["", f"[[{header}]]"])
                _table(item, (*path, name), lines)


def dumps(data: dict, header: str = "") -> str:
    """``data`` as a TOML document, after ``header`` written as comment lines."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    _table(data, (), lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def write_atomic(path: Path, text: str) -> None:
    """Write a whole file or nothing: a temporary file beside it, flushed to disk, then renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (a crash right after a save keeps the new file)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
