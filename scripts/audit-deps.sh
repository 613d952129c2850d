#!/usr/bin/env bash
# `make audit-deps`: pip-audit checks every pinned dependency (constraints.txt) against a
# vulnerability service: PyPI's JSON API (default) or OSV (`make audit-deps AUDIT_SERVICE=osv`).
# Exit 0: no known vulnerability. Exit 1: vulnerabilities (the table says which and the fix
# version). Exit 2: the service did not answer, so nothing was checked; run it where it answers
# (a release step, docs/security.md).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
AUDIT="$ROOT/.venv/bin/pip-audit"
SERVICE="${1:-pypi}"
say() { printf '[audit] %s\n' "$*"; }

[[ -x "$AUDIT" ]] || { say "pip-audit is missing from .venv: run 'make venv' (it is a dev extra)"; exit 2; }
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
packages="$(grep -cE '^[A-Za-z0-9_.-]+==' "$ROOT/constraints.txt")"
say "auditing $packages pinned packages in constraints.txt against the '$SERVICE' vulnerability service"
# Every package is pinned exactly, so no resolution is needed (--no-deps --disable-pip);
# --strict turns a package the service could not look up into a failure, never a silent skip.
"$AUDIT" -r "$ROOT/constraints.txt" --no-deps --disable-pip --strict -s "$SERVICE" \
  --progress-spinner off >"$out" 2>&1
rc=$?
if [[ $rc == 0 ]]; then
  grep -v '^WARNING:pip_audit._cli:' "$out"
  say "no known vulnerabilities in the $packages pinned packages"
  exit 0
fi
if grep -qE 'could not be audited|ConnectionError|NameResolutionError|Max retries exceeded|timed out' "$out"; then
  grep -E 'could not be audited|Error' "$out" | tail -n 1 >&2
  say "the '$SERVICE' vulnerability service did not answer from this machine: NOTHING WAS AUDITED." >&2
  say "Run 'make audit-deps' (or 'make audit-deps AUDIT_SERVICE=osv') where one answers before a release (docs/security.md)." >&2
  exit 2
fi
grep -v '^WARNING:pip_audit._cli:' "$out"
say "known vulnerabilities above: bump the pins in pyproject.toml/constraints.txt to the fix versions" >&2
exit 1
