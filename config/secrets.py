"""Secrets (keys, passwords) read from a file or an environment value, never logged or shown."""

from __future__ import annotations

from pathlib import Path

from config.settings import ENV_PREFIX, ConfigError


def read_secret(value: str, file_path: str, name: str, *, min_length: int = 1) -> str:
    """The secret `name` from `value` (an env value) or else the file at `file_path`.

    A file wins over nothing, a value wins over a file: `LIKEFLOW_<NAME>` for local runs,
    `LIKEFLOW_<NAME>_FILE` for mounted secrets (Kubernetes, Docker). Surrounding whitespace is
    stripped. Raises ConfigError saying what to set; the message never contains the secret.
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
    secret = secret.strip()
    if not secret:
        raise ConfigError(f"{var} is not set: set {var}_FILE to a file holding it, or {var}")
    if len(secret) < min_length:
        raise ConfigError(f"{var} is too short: use at least {min_length} characters")
    return secret
