"""A results home on object storage (``s3://bucket/prefix``; through fsspec also ``gs://`` and ``az://``).

The seam: a job keeps working in a local folder, the *local copy* of the remote home
(``$EVALJOBS_HOME/remote/<scheme>/<bucket>/<prefix>``), exactly as it works in a local results home. This module
pushes what a job records there (result rows, bundles, the leaderboard outputs) to the URL, and pulls a project's
rows and bundles into the local copy for every reader (the CLI, the sensor's gate, the comparison operator). A
reader needs nothing but the URL and credentials: a fresh disk works. Only ``s3://`` is tested here (against
SeaweedFS); ``gs://`` (gcsfs) and ``az://`` (adlfs) go through the same fsspec calls, untested.

Keys under the URL (``p``, ``m``, ``b``: the project, model and benchmark as :func:`results.slug` writes them,
``h``: the settings hash)::

    rows/p/m/b/h.json                      one object per result row; a re-run replaces it (same key)
    bundles/p/m/b/h/<digest>/<file>        the row's bundle (metrics.json, samples.jsonl, examples.json), under
                                           the SHA-256 of its files: written create-once, never overwritten
    leaderboards/p.json, leaderboards/p.csv, reports/p/index.html   the published outputs

**No lock on object storage.** ``flock`` has no counterpart there, so nothing here needs one:

- *Rows never clash.* Each (project, model, benchmark, settings) has its own row key, so concurrent jobs on
  different keys write different objects. Two writers of one key (a re-run, a zombie pod and its retry) each
  put a complete object (a PUT is atomic): the last one wins, as a re-run replaces its row locally.
- *A row never names a half-written bundle.* The bundle's files are put before the row, under a key made of
  their digest, with ``If-None-Match: *`` (create-once): a key holds one content forever, and a refused put
  means those very bytes are already there (a retry). A reader that lists a row finds its whole bundle.
- *The last leaderboard holds every row.* A publisher lists the project's rows (keys and ETags), builds and
  writes the outputs from them, then lists again; if the listing changed it rebuilds, until two listings
  agree. Why the last board written holds every row, on a store with strong read-after-write consistency for
  PUT and LIST (AWS S3 since 2020, SeaweedFS's filer): let F be the writer whose board is the object's final
  content, built from listing L and verified by a listing L' = L started after that write had completed. Take
  any row r, put by job J before J publishes. If r's put completed before L' started, L' (= L) lists it and F's
  board holds it. Otherwise J's put, and so J's own board write, came after F's write had completed: J's write
  is strictly later and would have replaced F's, contradicting F's being final. A re-run changes the row's ETag,
  so it counts as a change. A writer killed between its row and its board leaves a board without its row until
  the next publication; the readers never depend on it (they rebuild from the rows).

Credentials are the standard variables the clients read (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``; gcsfs and adlfs read theirs): never arguments, never in a URL (one
with ``user@`` is refused), never written anywhere. ``s3fs`` is the ``s3`` extra, imported when first used.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from evaljobs.engine.errors import EvalJobsError

# URL scheme -> (fsspec implementation package, how to install it)
SCHEMES = {
    "s3": ("s3fs", "pip install 'airflow-provider-evaljobs[s3]'"),
    "gs": ("gcsfs", "pip install gcsfs"),
    "gcs": ("gcsfs", "pip install gcsfs"),
    "az": ("adlfs", "pip install adlfs"),
    "abfs": ("adlfs", "pip install adlfs"),
}
BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{2,62}$")
PART = re.compile(r"^[\w.=+-]+$")
MARKER = ".remote"  # in a pulled (or pushed) local bundle folder: the bundle key it holds
CACHES = {"ci.json", "scores.json"}  # the statistics caches in a bundle folder: local, rebuilt when missing
ROUNDS = 20  # publication rounds before a publisher gives up waiting for the rows to stop changing


class StorageError(EvalJobsError):
    """The object store refused or failed a read or write; names the URL and what to check."""


def is_url(home: Any) -> bool:
    """Whether ``home`` names object storage (``scheme://...`` with a scheme fsspec has a store for)."""
    scheme, sep, _ = str(home or "").partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


def check_url(value: str) -> str:
    """``value`` as the results home's URL (``scheme://bucket/prefix``, no trailing slash), or ValueError naming
    the fix: a known scheme, a bucket, no credentials, no query, no ``..``."""
    scheme, _, rest = value.partition("://")
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"{value!r}: the results home URL's scheme must be one of {', '.join(sorted(SCHEMES))}")
    bucket, _, prefix = rest.strip("/").partition("/")
    if "@" in bucket or "?" in rest or "#" in rest:
        raise ValueError(
            f"the results home {scheme}://{bucket.rpartition('@')[2]}/... must not carry credentials, a query or a "
            "fragment: credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the store's own variables)"
        )
    if not BUCKET.match(bucket):
        raise ValueError(f"{value!r}: {bucket!r} is not a bucket name (3-63 lower-case letters, digits, '.', '-')")
    parts = [p for p in prefix.split("/") if p]
    if any(p in (".", "..") or not PART.match(p) for p in parts):
        raise ValueError(f"{value!r}: the prefix may hold letters, digits and . _ - = + between '/' (no '..')")
    return f"{scheme}://{'/'.join([bucket, *parts])}"


def local_copy(url: str) -> Path:
    """The local working folder of the results home at ``url``: ``$EVALJOBS_HOME/remote/<scheme>/<bucket>/...``."""
    from evaljobs.engine.spec import default_results_home

    scheme, _, rest = check_url(url).partition("://")
    return default_results_home() / "remote" / scheme / Path(*rest.split("/"))


def home_of(value: str | Path | None) -> str | Path:
    """A ``--results-home`` / operator value: a URL stays text (``Path`` would fold its ``//``), else a Path; None
    is the default home (``$EVALJOBS_HOME``)."""
    if value is None or str(value) == "":
        from evaljobs.engine.spec import default_results_home

        return default_results_home()
    return check_url(str(value)) if is_url(value) else Path(value).expanduser()


def local_folder(home: str | Path) -> Path:
    """Where a results home's files are read and written on this machine: the folder, or a URL's local copy."""
    return local_copy(str(home)) if is_url(home) else Path(home).expanduser()


def project_rows(home: str | Path, project: str) -> list:
    """The rows of ``project`` (oldest first) in a results home: a folder's store, or for a URL the listed row
    objects, with their bundles pulled into the local copy (their ``bundle`` is the local folder)."""
    if is_url(home):
        return RemoteHome(str(home)).pull(project)
    from evaljobs.engine.results import ResultsStore

    return ResultsStore(Path(home).expanduser()).rows(project)


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem and root path of ``url``, without listing caches (other writers change the store);
    a missing implementation is an error naming what to install."""
    scheme = url.partition("://")[0]
    try:
        import fsspec

        fs, root = fsspec.core.url_to_fs(url, use_listings_cache=False, skip_instance_cache=True)
    except ImportError as exc:
        package, install = SCHEMES[scheme]
        raise StorageError(f"a results home on {scheme}:// needs {package}: {install} ({exc})") from None
    return fs, root.rstrip("/")


def _rel(root: str, path: str) -> str:
    return path[len(root) + 1 :] if path.startswith(root + "/") else path


def _etag(info: dict[str, Any]) -> str:
    """What changes when an object is replaced: its ETag (S3, GCS's md5), else its size and time."""
    for key in ("ETag", "etag", "md5Hash"):
        if info.get(key):
            return str(info[key]).strip('"')
    return f"{info.get('size')}:{info.get('LastModified') or info.get('mtime') or info.get('updated')}"


@dataclass
class RemoteHome:
    """A results home at ``url``, its local copy, and the pushes and pulls between them."""

    url: str
    local: Path | None = None  # default: the URL's local copy (:func:`local_copy`)

    def __post_init__(self) -> None:
        self.url = check_url(self.url)
        self.local = Path(self.local) if self.local else local_copy(self.url)
        self._fs: Any = None

    @classmethod
    def of(cls, home: str | Path | None) -> RemoteHome | None:
        return cls(str(home)) if is_url(home) else None

    @property
    def fs(self) -> Any:
        if self._fs is None:
            self._fs, self.root = filesystem(self.url)
        return self._fs

    def path(self, key: str) -> str:
        """The store path of ``key`` (relative to the home)."""
        self.fs  # noqa: B018  (sets the root)
        return f"{self.root}/{key}"

    def _failed(self, action: str, key: str, exc: Exception) -> StorageError:
        return StorageError(
            f"{action} {self.url}/{key} failed: {type(exc).__name__}: {exc}. Check the bucket exists and the "
            "credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL) may write to it"
        )

    # --- objects ------------------------------------------------------------------------------------------

    def put(self, key: str, data: bytes, create: bool = False) -> bool:
        """Write ``data`` at ``key``; with ``create``, only if no object is there (``If-None-Match: *`` on S3).
        Returns False when ``create`` found the key taken (nothing was written)."""
        path = self.path(key)
        try:
            self.fs.pipe_file(path, data, mode="create" if create else "overwrite")
        except (FileExistsError, OSError) as exc:
            if create and (isinstance(exc, FileExistsError) or self.fs.exists(path)):
                return False
            raise self._failed("writing", key, exc) from None
        return True

    def get(self, key: str) -> bytes | None:
        """The object at ``key``, or None when there is none."""
        try:
            return self.fs.cat_file(self.path(key))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._failed("reading", key, exc) from None

    def put_file(self, key: str, local: Path, create: bool = False) -> bool:
        return self.put(key, Path(local).read_bytes(), create)

    def get_file(self, key: str, local: Path) -> bool:
        """Copy the object at ``key`` to ``local`` (replaced atomically); False when there is none."""
        from evaljobs.engine.results import write_bytes

        data = self.get(key)
        if data is not None:
            write_bytes(Path(local), data)
        return data is not None

    def cat_many(self, keys: list[str]) -> dict[str, bytes]:
        """The objects at ``keys``, read concurrently: key -> content. A key with no object (deleted since it was
        listed) is left out; any other failure is an error, so that nothing is left out silently."""
        if not keys:
            return {}
        paths = {self.path(k): k for k in keys}
        try:
            found = self.fs.cat(list(paths), on_error="return")
        except OSError as exc:
            raise self._failed("reading", keys[0], exc) from None
        for path, value in found.items():
            if isinstance(value, Exception) and not isinstance(value, FileNotFoundError):
                raise self._failed("reading", paths.get(path, path), value)
        return {paths.get(p, p): v for p, v in found.items() if not isinstance(v, Exception)}

    def listing(self, prefix: str) -> dict[str, str]:
        """The objects under ``prefix`` (a key folder): key -> ETag (what changes when an object is replaced)."""
        try:
            self.fs.invalidate_cache()
            found = self.fs.find(self.path(prefix), detail=True)
        except OSError as exc:  # an empty prefix lists nothing; a missing bucket is an error
            raise self._failed("listing", prefix, exc) from None
        return {_rel(self.root, p): _etag(info) for p, info in found.items() if info.get("type", "file") == "file"}

    # --- rows and bundles ---------------------------------------------------------------------------------

    @staticmethod
    def row_key(project: str, model: str, benchmark: str, settings_hash: str) -> str:
        from evaljobs.engine.results import slug

        return f"rows/{slug(project)}/{slug(model)}/{slug(benchmark)}/{settings_hash}.json"

    def push_result(self, row: Any) -> str:
        """Push ``row`` (just recorded in the local copy) and its bundle: the bundle's files create-once under
        their digest, then the row object (replacing an earlier one of the same key). Returns the row key."""
        from evaljobs.engine.results import slug, write_text

        folder = Path(row.bundle)
        files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if _pushed(p)}
        digest = hashlib.sha256()
        for name, data in files.items():
            digest.update(f"{name}\0{hashlib.sha256(data).hexdigest()}\n".encode())
        bundle = f"bundles/{slug(row.project)}/{slug(row.model)}/{slug(row.benchmark)}/{row.settings_hash}"
        bundle += f"/{digest.hexdigest()[:32]}"
        for name, data in files.items():
            self.put(f"{bundle}/{name}", data, create=True)
        key = self.row_key(row.project, row.model, row.benchmark, row.settings_hash)
        body = {"format": 1, "row": asdict(row) | {"bundle": bundle}, "files": sorted(files)}
        self.put(key, (json.dumps(body, indent=1, sort_keys=True, default=str) + "\n").encode())
        write_text(folder / MARKER, bundle)  # the local folder already holds this bundle: no pull needed
        return key

    def rows_listing(self, project: str) -> dict[str, str]:
        from evaljobs.engine.results import slug

        return {k: v for k, v in self.listing(f"rows/{slug(project)}").items() if k.endswith(".json")}

    def pull(self, project: str, listing: dict[str, str] | None = None) -> list[Any]:
        """The project's rows (oldest first) from the store, each bundle pulled into the local copy unless it is
        there already; a row whose bundle cannot be read is left out (its writer was interrupted)."""
        from evaljobs.engine.results import ResultRow, ResultsStore, write_bytes, write_text

        keys = sorted(self.rows_listing(project) if listing is None else listing)
        bodies = self.cat_many(keys)
        rows = []
        for body in bodies.values():
            try:
                data = json.loads(body)
                values, files, bundle = data["row"], data["files"], data["row"]["bundle"]
                row = ResultRow(**values)
            except (ValueError, KeyError, TypeError):
                continue  # not a row this version wrote
            folder = ResultsStore(self.local).bundle_dir(row.project, row.model, row.benchmark, row.settings_hash)
            marker = folder / MARKER
            if not (marker.is_file() and marker.read_text() == bundle):
                got = self.cat_many([f"{bundle}/{name}" for name in files])
                if len(got) != len(files):
                    continue
                for key, content in got.items():
                    write_bytes(folder / key.rpartition("/")[2], content)
                write_text(marker, bundle)
            rows.append(ResultRow(**(values | {"bundle": str(folder)})))
        return sorted(rows, key=lambda r: r.recorded_at)

    # --- published outputs --------------------------------------------------------------------------------

    def push_outputs(self, project: str) -> list[str]:
        """Put the project's leaderboard (JSON, CSV) and report folder from the local copy; returns the keys."""
        from evaljobs.engine.results import slug

        name = slug(project)
        home = Path(self.local or "")
        local = [home / "leaderboards" / f"{name}.json", home / "leaderboards" / f"{name}.csv"]
        local += sorted(p for p in (home / "reports" / name).rglob("*") if not p.name.startswith("."))
        keys = []
        for path in (p for p in local if p.is_file()):
            key = path.relative_to(home).as_posix()
            self.put_file(key, path)
            keys.append(key)
        return keys

    def publish(
        self, project: str, render: Callable[[list[Any]], Any], write: bool = True, log: Callable[[str], None] = print
    ) -> Any:
        """``render(rows)`` (the caller builds and writes the outputs into the local copy) on the project's
        pulled rows; with ``write``, push the outputs and repeat until the rows listed after the push are those
        it was built from (the module docstring says why the last board then holds every row)."""
        listing = self.rows_listing(project)
        for _ in range(ROUNDS):
            result = render(self.pull(project, listing))
            if not write:
                return result
            self.push_outputs(project)
            again = self.rows_listing(project)
            if again == listing:
                return result
            log(f"{len(set(again.items()) ^ set(listing.items()))} rows changed while publishing: rebuilding")
            listing = again
        log(f"the rows of {project} kept changing over {ROUNDS} rounds: the writers of the newest publish them")
        return result


def _pushed(path: Path) -> bool:
    """Whether a bundle folder's file belongs in the store: not a marker or temp file, not a statistics cache."""
    return path.is_file() and not path.name.startswith(".") and path.name not in CACHES
