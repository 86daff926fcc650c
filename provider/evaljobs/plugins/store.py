"""What the leaderboard pages read: the files ``publish`` writes under a results home, and nothing else.

Every read goes through :class:`PublishedResults` (a local folder) or :class:`PublishedObjects` (a results home on
object storage, ``s3://bucket/prefix``: the same methods over the objects ``publish`` pushes; needs the ``s3``
extra). The pages never write, never open the results database, and need no engine extra."""

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


@dataclass(frozen=True)
class PublishedObjects:
    """The published leaderboards and reports of a results home on object storage (the keys of
    :class:`PublishedResults`' files under the URL), read with the standard credentials (``AWS_*``)."""

    home: str

    def _store(self):
        from evaljobs.engine.objectstore import RemoteHome

        return RemoteHome(self.home)

    def projects(self) -> list[str]:
        names = (key.removeprefix("leaderboards/") for key in self._store().listing("leaderboards"))
        return sorted(n.removesuffix(".json") for n in names if n.endswith(".json") and "/" not in n)

    def read(self, project: str, kind: str) -> bytes | None:
        return self._store().get(FILES[kind].format(project)) if valid(project) else None

    def has(self, project: str, kind: str) -> bool:
        if not valid(project):
            return False
        store = self._store()
        return bool(store.fs.exists(store.path(FILES[kind].format(project))))

    def leaderboard(self, project: str) -> dict[str, Any] | None:
        data = self.read(project, "json")
        return json.loads(data) if data else None


def published_results(home: str | Path) -> PublishedResults | PublishedObjects:
    """The reader of ``home``: a folder's files, or an object-store URL's objects."""
    from evaljobs.engine.objectstore import is_url

    return PublishedObjects(str(home)) if is_url(home) else PublishedResults(Path(home))


def valid(project: str) -> bool:
    """Whether ``project`` can be a published project's file name: no separator, no leading dot, no ``..``."""
    return bool(PROJECT.fullmatch(project)) and ".." not in project
