"""Secrets (keys, passwords) read from a file or an environment value, never logged or shown."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

from config.settings import ENV_PREFIX, ConfigError

log = logging.getLogger(__name__)

# Permission bits a secrets file must not have: any access by others, or write by its group.
# Group read stays allowed: Kubernetes mounts Secret files 0440 when the pod sets an fsGroup.
LOOSE_MODE_BITS = stat.S_IRWXO | stat.S_IWGRP
# Files already warned about in this process (clients are built, and secrets read, many times).
_warned: set[Path] = set()


def read_secret(value: str, file_path: str, name: str, *, min_length: int = 1) -> str:
    """The secret `name` from `value` (an env value) or else the file at `file_path`.

    A file wins over nothing, a value wins over a file: `LIKEFLOW_<NAME>` for local runs,
    `LIKEFLOW_<NAME>_FILE` for mounted secrets (Kubernetes, Docker). Surrounding whitespace is
    stripped. A file that others can read or write, or its group write, is read but warned
    about (`warn_if_exposed`). Raises ConfigError saying what to set; the message never
    contains the secret.
    """
    var = f"{ENV_PREFIX}{name.upper()}"
    secret = value
    if not secret and file_path:
        path = Path(file_path)
        try:
            secret = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(
                f"{var}_FILE={file_path!r} does not exist: create it (`make secrets` makes local "
                f"ones) or set {var}_FILE to the mounted secret"
            ) from None
        except OSError as exc:
            raise ConfigError(f"{var}_FILE={file_path!r} cannot be read: {exc.strerror}") from None
        warn_if_exposed(path, f"{var}_FILE")
    secret = secret.strip()
    if not secret:
        raise ConfigError(f"{var} is not set: set {var}_FILE to a file holding it, or {var}")
    if len(secret) < min_length:
        raise ConfigError(f"{var} is too short: use at least {min_length} characters")
    return secret


def warn_if_exposed(path: Path, var: str) -> bool:
    """Log a warning (once per file and process) when the secrets file `path` is readable or
    writable by others, or writable by its group: anyone on the host with that access can read
    or replace the secret. Returns whether the mode is too open."""
    try:
        mode = path.stat().st_mode  # follows symlinks: Kubernetes mounts link to the real file
    except OSError:
        return False
    loose = mode & LOOSE_MODE_BITS
    if not loose:
        return False
    if path not in _warned:
        _warned.add(path)
        who = []
        if mode & stat.S_IRWXO:
            who.append("others")
        if mode & stat.S_IWGRP:
            who.append("its group (write)")
        log.warning(
            "secrets file %s=%s has mode %03o: %s can reach the secret; run `chmod 600 %s` "
            "(group read is fine, as Kubernetes fsGroup mounts give 0440)",
            var,
            path,
            stat.S_IMODE(mode),
            " and ".join(who),
            path,
        )
    return True
