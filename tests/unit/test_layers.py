"""The dependency rule of the package layout (CONTRIBUTING.md), checked on the source's imports.

domain (pure) <- engine (the batch engine that bends Faust) <- sinks, replicas, tables <- agents
<- worker <- cli; the operator tools (`ops`) never import agents or the worker. A violation fails
here, with the file and the import.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("likeflow", "agents", "tables", "streams", "config")

# Modules every room may use: the errors, logs, metrics, clients, progress lines and the
# settings-to-policy conversion (`likeflow/*.py` outside the rooms, and the package itself).
FOUNDATION = "foundation"
BASE = {"config", "streams", "domain", FOUNDATION}
ALLOWED: dict[str, set[str]] = {
    "config": {"config", "errors"},
    "domain": {"domain", "streams.events", "errors"},
    "streams": {"config", "streams", "domain"},
    FOUNDATION: BASE,
    "engine": BASE | {"engine"},
    "tables": BASE | {"tables"},
    "sinks": BASE | {"engine", "sinks"},
    "replicas": BASE | {"replicas"},
    "agents": BASE | {"engine", "tables", "sinks", "replicas", "agents"},
    "worker": BASE | {"engine", "tables", "sinks", "replicas", "agents", "worker"},
    "ops": BASE | {"engine", "tables", "sinks", "replicas", "ops"},
    "cli": BASE | {"engine", "tables", "sinks", "replicas", "agents", "worker", "ops", "cli"},
}
# Pure code imports none of the stream, Kafka or Redis libraries: it unit-tests in milliseconds.
LIBRARIES = ("faust", "mode", "aiokafka", "redis", "prometheus_client")
ROOMS = ("domain", "engine", "sinks", "replicas", "worker", "ops")


def room_of(module: str) -> str:
    """The room of a first-party module name (`likeflow.ops.replay` -> `ops`)."""
    parts = module.split(".")
    if parts[0] != "likeflow":
        return parts[0]
    if len(parts) > 1 and parts[1] in ROOMS:
        return parts[1]
    if len(parts) > 1 and parts[1] in {"cli", "__main__"}:
        return "cli"
    return FOUNDATION


def permits(allowed: set[str], target: str) -> bool:
    """Whether an import of `target` is allowed: by its room, or by its exact module (e.g. the
    domain may import the event model `streams.events` but not the topic declarations)."""
    if target.startswith("likeflow.errors"):
        return "errors" in allowed or FOUNDATION in allowed
    return room_of(target) in allowed or any(target == a or target.startswith(a + ".") for a in allowed)


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every absolute import of a file, with its line (relative imports are not used here)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # `from likeflow import connections` names a module, not an attribute.
            if node.module in PACKAGES:
                found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
    return found


def source_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_every_first_party_import_follows_the_dependency_rule() -> None:
    violations = []
    for path in source_files():
        room = room_of(module_name(path))
        for line, target in imports_of(path):
            if target.split(".")[0] not in PACKAGES or target == "likeflow":
                continue
            if not permits(ALLOWED[room], target):
                violations.append(f"{path.relative_to(ROOT)}:{line}: {room} imports {target}")
    assert not violations, "\n".join(violations)


def test_the_domain_imports_no_stream_kafka_or_redis_library() -> None:
    violations = [
        f"{path.relative_to(ROOT)}:{line}: {target}"
        for path in source_files()
        if room_of(module_name(path)) == "domain"
        for line, target in imports_of(path)
        if target.split(".")[0] in LIBRARIES
    ]
    assert not violations, "\n".join(violations)


def test_every_folder_of_the_package_is_a_room_of_the_rule() -> None:
    # A new folder under likeflow/ would otherwise be judged as the shared files: add it to
    # ROOMS and ALLOWED (and CONTRIBUTING.md) with the imports it may make.
    folders = {p.parent.name for p in (ROOT / "likeflow").glob("*/__init__.py")}
    assert folders == set(ROOMS), folders ^ set(ROOMS)


def test_the_rule_catches_an_agent_import_in_an_operator_tool() -> None:
    # The checker itself: an ops module importing an agent is refused, a sink is not.
    assert not permits(ALLOWED["ops"], "agents.prompt_likes")
    assert not permits(ALLOWED["ops"], "likeflow.worker.app")
    assert permits(ALLOWED["ops"], "likeflow.sinks.redis_quality")
    assert not permits(ALLOWED["domain"], "streams.topics")
    assert permits(ALLOWED["domain"], "streams.events")
    assert not permits(ALLOWED["engine"], "agents.context"), "the engine knows no handler"
    assert not permits(ALLOWED["engine"], "likeflow.sinks.dead_letters")
