"""What the leaderboard pages read: the files ``publish`` writes under a results home, and nothing else.

Every read goes through :class:`PublishedResults` (a local folder today; object storage is another class with
the same methods). The pages never write, never open the results database, and need no engine extra."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A project as the URL names it: the file-safe name its leaderboard is saved under (see engine.results.slug).
PROJECT = re.compile(r"[\w][\w.-]{0,119}")
FILES = {"json": "leaderboards/{}.json", "csv": "leaderboards/{}.csv", "report": "reports/{}/index.html"}


@dataclass(frozen=True)
class PublishedResults:
    """The published leaderboards (``leaderboards/<project>.json|csv``) and reports (``reports/<project>/``)."""

    home: Path

    def projects(self) -> list[str]:
        """The projects with a published leaderboard, by name."""
        folder = self.home / "leaderboards"
        return sorted(p.stem for p in folder.glob("*.json") if p.is_file()) if folder.is_dir() else []

    def read(self, project: str, kind: str) -> bytes | None:
        """A published file of ``project``: ``json`` or ``csv`` (the leaderboard) or ``report`` (its HTML page);
        None when it is absent or ``project`` is not a published project's name (no path escapes the home)."""
        path = self._path(project, kind)
        return path.read_bytes() if path else None

    def has(self, project: str, kind: str) -> bool:
        """Whether :meth:`read` would find the file (without reading it: a report can be megabytes)."""
        return self._path(project, kind) is not None

    def _path(self, project: str, kind: str) -> Path | None:
        if not valid(project) or project not in self.projects():
            return None
        path = self.home / FILES[kind].format(project)
        return path if path.is_file() else None

    def leaderboard(self, project: str) -> dict[str, Any] | None:
        """The leaderboard of ``project`` as ``Leaderboard.as_dict`` saved it, or None."""
        data = self.read(project, "json")
        return json.loads(data) if data else None


def valid(project: str) -> bool:
    """Whether ``project`` can be a published project's file name: no separator, no leading dot, no ``..``."""
    return bool(PROJECT.fullmatch(project)) and ".." not in project
