"""Presets saved in the instance folder: read with the built-in ones, reloaded when the folder changes.

The rule studio and `gate preset new|edit|delete` write ``NAME.toml`` files here
(``GATE_PRESETS_DIR``, by default ``instance/presets``), never inside the installed
package. Every process of a site looks at the folder once per request with one
``stat``: a save or a delete renames or removes a file, which moves the folder's
modification time, and only then is the listing read again (and only the files
that changed are parsed). An article's page, the hot path, looks only when the
site's version moved (every save and delete through gate moves it) and once
every :data:`LOOK_SECONDS` otherwise (:mod:`gate.services.sitestate`). A file
that cannot be used is reported by name and skipped: the site goes on with the
others, unlike a broken built-in preset.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from gate.rules.paywall import Rules

log = logging.getLogger("gate.presets")

#: A saved preset's name is its file name: lower-case letters, digits and dashes.
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
NAME_RULE = "1-40 lower-case letters, digits or dashes, starting with a letter or digit"
#: File systems stamp times in coarse ticks (a few ms): a folder changed this recently is
#: listed again on each look, so two saves within one tick are both seen.
RACY_NS = 2_000_000_000
#: How long an article's page goes without looking at the folder while the site's version stays the
#: same (a save or delete through gate moves it): a file put in the folder by hand is seen within this.
LOOK_SECONDS = 1.0
#: What a file's contents are known by: a save renames a new file in (a new inode).
_Stamp = tuple[int, int, int]


#: Names the studio's own pages take (/admin/rules/new).
RESERVED = ("new",)


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a saved preset, or None."""
    if not (isinstance(name, str) and NAME.match(name)):
        return f"a preset name is {NAME_RULE}"
    return f"{name!r} is the studio's own page: choose another name" if name in RESERVED else None


def _stamp(stat: os.stat_result) -> _Stamp:
    """What tells one version of a file or folder from the next."""
    return (stat.st_mtime_ns, stat.st_ino, stat.st_size)


class SavedPresets:
    """The saved presets of one site, merged after the built-in ones and kept up to date by :meth:`check`."""

    def __init__(self, folder: Path | str | None, builtin: dict[str, Rules],
                 load: Callable[[Path], Rules]) -> None:
        self.folder = Path(folder) if folder else None
        self.builtin = builtin
        self._load = load
        #: Saved presets that loaded, and the files that did not (name → reason).
        self.rules: dict[str, Rules] = {}
        self.problems: dict[str, str] = {}
        self.presets: dict[str, Rules] = dict(builtin)
        self._files: dict[str, _Stamp] = {}
        self._folder: _Stamp | None = None
        self._racy = True
        self._looked = 0.0  # time.monotonic() of the last look
        self._lock = threading.Lock()
        self.check()

    def _folder_stamp(self) -> _Stamp | None:
        """The folder's stamp (one ``stat``), or None when there is no folder yet."""
        if self.folder is None:
            return None
        try:
            return _stamp(os.stat(self.folder))  # without Path.stat's own frame: every request asks
        except OSError:
            return None

    def check(self, within: float = 0.0) -> bool:
        """Read the folder again if it changed since the last look; True if the presets changed.

        With ``within``, no look at all (not even its ``stat``) if the last one
        was less than that many seconds ago: a change is seen at the next look
        after that, racy or not.
        """
        now = time.monotonic()
        if within and now - self._looked < within:
            return False
        self._looked = now
        stamp = self._folder_stamp()
        if stamp == self._folder and not self._racy:
            return False
        with self._lock:
            return self._rescan(stamp)

    def _rescan(self, stamp: _Stamp | None) -> bool:
        """List the folder, parse the files that are new or changed, and drop the ones gone."""
        listing = self._listing()
        rules = {name: self.rules[name] for name, seen in listing.items()
                 if self._files.get(name) == seen and name in self.rules}
        problems = {name: self.problems[name] for name, seen in listing.items()
                    if self._files.get(name) == seen and name in self.problems}
        for name in listing.keys() - rules.keys() - problems.keys():
            try:
                rules[name] = self._read(name)
            except ValueError as error:
                problems[name] = str(error)
                log.warning("saved preset %s skipped: %s", name, error)
        changed = rules != self.rules or problems != self.problems
        self.rules, self.problems, self._files = rules, problems, listing
        self.presets = {**self.builtin, **dict(sorted(rules.items()))}
        self._folder = stamp
        self._racy = stamp is not None and time.time_ns() - stamp[0] < RACY_NS
        return changed

    def _listing(self) -> dict[str, _Stamp]:
        """Every ``*.toml`` in the folder and its stamp (a file removed meanwhile is left out)."""
        found = {}
        if self.folder is None or not self.folder.is_dir():
            return found
        for entry in os.scandir(self.folder):
            if entry.name.endswith(".toml") and not entry.name.startswith("."):
                try:
                    found[entry.name[:-5]] = _stamp(entry.stat())
                except OSError:
                    continue
        return found

    def _read(self, name: str) -> Rules:
        """One saved file's rules, or a ValueError saying why it cannot be used."""
        path = self.path(name)
        problem = name_problem(name)
        if problem:
            raise ValueError(f"{path}: not a preset name ({problem}): rename the file")
        if name in self.builtin:
            raise ValueError(f"{path}: shadows the built-in preset {name!r}: rename the file")
        return self._load(path)

    def path(self, name: str) -> Path:
        """Where the saved preset ``name`` lives (whether or not it exists)."""
        if self.folder is None:
            raise ValueError("this site has no folder for saved presets (GATE_PRESETS_DIR)")
        return self.folder / f"{name}.toml"
