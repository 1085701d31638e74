"""Where profiles live on disk: one directory, files named by unguessable ids only.

Every path is built from an id that matched ``ID_PATTERN`` and is checked to resolve
inside the directory, so no request can name a file elsewhere. The directory is created
0700 and refused when it is a symlink or belongs to another user, so that another local
user cannot plant or read profiles (they hold source paths and function names).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
from pathlib import Path

from agent.profiling.errors import ProfileNotFound, StorageError

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
META_SUFFIX = ".meta.json"


def new_id() -> str:
    return secrets.token_urlsafe(16)  # 128 bits, URL-safe; never derived from a pid or a time


def default_directory() -> str:
    return os.path.join(tempfile.gettempdir(), f"gpulse-profiles-{os.getuid()}")


class ProfileFiles:
    def __init__(self, directory: str | None) -> None:
        self.directory = Path(directory or default_directory())
        self._prepare()
        self.root = self.directory.resolve()

    def _prepare(self) -> None:
        path = self.directory
        if path.is_symlink():
            raise StorageError(f"profiling.directory {path} is a symlink: point it at a real directory")
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"profiling.directory {path} cannot be created ({exc.strerror}): choose a writable directory"
            ) from exc
        info = path.stat()
        if info.st_uid != os.getuid():
            raise StorageError(
                f"profiling.directory {path} belongs to uid {info.st_uid}, "
                f"not the agent's uid {os.getuid()}: "
                "use a directory the agent owns"
            )
        if info.st_mode & 0o077:
            os.chmod(path, 0o700)  # profiles name source files and functions: keep them private

    def path(self, profile_id: str, suffix: str) -> Path:
        if not ID_PATTERN.match(profile_id):
            raise ProfileNotFound(f"no profile {profile_id!r}")
        if "/" in suffix or "\\" in suffix or ".." in suffix:
            raise ValueError(f"bad file suffix {suffix!r}")
        candidate = (self.root / f"{profile_id}.{suffix}").resolve()
        if candidate.parent != self.root:
            raise ProfileNotFound(f"no profile {profile_id!r}")
        return candidate

    def write_text(self, profile_id: str, suffix: str, text: str) -> Path:
        target = self.path(profile_id, suffix)
        tmp = target.with_name(target.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, target)
        return target

    def write_meta(self, profile_id: str, meta: dict[str, object]) -> None:
        self.write_text(profile_id, META_SUFFIX.lstrip("."), json.dumps(meta, separators=(",", ":")))

    def files(self, profile_id: str) -> list[Path]:
        if not ID_PATTERN.match(profile_id):
            return []
        return sorted(p for p in self.root.glob(f"{profile_id}.*") if p.is_file() and not p.is_symlink())

    def size(self, profile_id: str) -> int:
        total = 0
        for path in self.files(profile_id):
            try:
                total += path.stat().st_size
            except OSError:
                continue
        return total

    def delete(self, profile_id: str) -> None:
        for path in self.files(profile_id):
            try:
                path.unlink()
            except FileNotFoundError:
                continue

    def load_metas(self) -> list[dict[str, object]]:
        """Metadata of the profiles a previous run left here, oldest first."""
        out: list[dict[str, object]] = []
        for path in self.root.glob(f"*{META_SUFFIX}"):
            profile_id = path.name[: -len(META_SUFFIX)]
            if not ID_PATTERN.match(profile_id) or path.is_symlink():
                continue
            try:
                meta = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(meta, dict) and meta.get("id") == profile_id:
                out.append(meta)
        out.sort(key=lambda m: float(m.get("created_at") or 0))  # type: ignore[arg-type]
        return out
