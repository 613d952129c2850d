"""Audit log v2 on the real broker: signed checkpoints catch truncation, a rewritten tail,
reordering, a missing batch and a zombie's fork, each in a tampered copy of the log; proofs
from `likeflow audit prove | consistency` check with the public key alone (docs/audit.md)."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from config import Settings
from likeflow.connections import audit_signing_key
from likeflow.domain.audit import BreakReason
from likeflow.domain.audit_proof import ProofError, check_document
from likeflow.domain.audit_tree import public_key_bytes, seal, tree_head_of
from likeflow.ops.audit_verify import checkpoints_in, verify_topic
from likeflow.ops.topics import ensure_topics
from likeflow.sinks.audit_log import AuditTrail
from streams.topics import AUDIT_LOG
from tests.integration.harness import Consumed, present, read_topic, run_cli
from tests.integration.namespaces import private_settings
from tests.integration.test_audit import copy_topic, records

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def evidence_settings(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = private_settings(base_settings, tmp_path_factory)
    asyncio.run(ensure_topics(settings))
    return settings


async def write_log(settings: Settings) -> list[Consumed]:
    """Six batch records on partition 0; checkpoints after the 1st (first append), 3rd and 6th."""
    trail = AuditTrail(settings)
    await trail.start()
    try:
        for b in range(6):
            await trail.append(0, "prompt" if b % 2 == 0 else "feedback", records(f"ev{b}", 2 + b))
            if b == 2:
                await trail.checkpoint_all()
    finally:
        await trail.stop()  # signs the last head
    log = await read_topic(settings, settings.topic(AUDIT_LOG))
    return sorted((r for r in log if r.partition == 0), key=lambda r: r.offset)


@pytest.fixture(scope="module")
def evidence_log(evidence_settings: Settings) -> list[Consumed]:
    return asyncio.run(write_log(evidence_settings))


async def test_every_kind_of_tampering_with_a_copy_of_the_log_is_detected_and_named(
    evidence_settings: Settings, evidence_log: list[Consumed]
) -> None:
    settings = evidence_settings
    topic = settings.topic(AUDIT_LOG)
    log = evidence_log
    assert len(log) == 6
    values = [present(r.value) for r in log]
    heads = [tree_head_of(v) for v in values]

    results = await verify_topic(settings)
    assert results[0].ok and results[0].size == sum(2 + b for b in range(6))
    assert results[0].checkpoints == 3 and results[0].signed_size == heads[-1].size

    async def tampered(name: str, copy: list[bytes]) -> tuple[BreakReason | None, int]:
        dest = settings.topic(f"audit-{name}")
        by_offset = dict(enumerate(copy))
        source = [Consumed(None, v, [], 0, i) for i, v in by_offset.items()]
        await copy_topic(settings, source, dest, lambda r: r.value)
        result = (await verify_topic(settings, dest, log_name=topic))[0]
        brk = result.first_break
        return (brk.reason, brk.offset) if brk else (None, result.checkpoints)

    # An exact copy verifies against the original's checkpoints.
    assert await tampered("copy", values) == (None, 3)
    # Truncation: the last batch deleted leaves a valid, shorter log; the last checkpoint covers more.
    assert await tampered("truncated", values[:5]) == (BreakReason.TRUNCATED, 5)
    # A rewritten tail, every hash and root recomputed: not what the last checkpoint signed.
    forged4, h4 = seal(heads[3], [("prompt", records("forged", 6))])
    forged5, _ = seal(h4, [("feedback", records("forged2", 7))])
    assert await tampered("rewritten", [*values[:4], forged4, forged5]) == (BreakReason.REWRITTEN, 5)
    # Two batches swapped; a batch deleted from the middle.
    assert await tampered("reordered", [*values[:3], values[4], values[3], values[5]]) == (
        BreakReason.REORDERED,
        3,
    )
    assert await tampered("missing", [*values[:3], *values[4:]]) == (BreakReason.MISSING_BATCH, 3)
    # A zombie writer's batch extending the head the owner had already extended.
    zombie, _ = seal(heads[2], [("prompt", records("zombie", 3))])
    assert await tampered("fork", [*values[:4], zombie, *values[4:]]) == (BreakReason.FORK, 4)

    # The command line names them too, and a stranger's public key fails every checkpoint.
    cli = await run_cli(
        settings, "audit", "verify", "--topic", settings.topic("audit-truncated"), "--log-name", topic
    )
    assert cli.returncode == 1
    assert f"first break: {settings.topic('audit-truncated')}[0]@5: truncated".encode() in cli.stdout, (
        cli.stdout
    )
    stranger = await run_cli(settings, "audit", "verify", "--public-key", "ab" * 32)
    assert stranger.returncode == 1 and b"bad checkpoint" in stranger.stdout, stranger.stdout
    ok = await run_cli(settings, "audit", "verify")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert b"3 signed checkpoints match" in ok.stdout, ok.stdout


async def test_proofs_check_with_the_public_key_alone(
    evidence_settings: Settings, evidence_log: list[Consumed], tmp_path: Path
) -> None:
    settings = evidence_settings
    topic = settings.topic(AUDIT_LOG)
    public = public_key_bytes(audit_signing_key(settings))
    out = await run_cli(settings, "audit", "public-key")
    assert out.returncode == 0 and out.stdout.decode().strip() == public.hex()

    # The WORM copy: one file per checkpoint, and `verify --checkpoint-dir` checks them all.
    exported = checkpoints_in(Path(settings.data_dir) / "audit-checkpoints")
    assert len(exported) >= 3 and all(cp.log.startswith(f"{topic}/") for cp in exported)
    results = await verify_topic(settings, checkpoints=exported, checkpoint_topic="")
    assert results[0].ok and results[0].checkpoints >= 3

    proved = await run_cli(settings, "audit", "prove", "ev2-3")
    assert proved.returncode == 0, proved.stderr
    doc = json.loads(proved.stdout)
    assert orjson.loads(base64.b64decode(doc["leaf_b64"]))["prompt_id"] == "ev2-3"
    assert "is in" in check_document(doc, public)
    path = tmp_path / "proof.json"
    path.write_text(json.dumps(doc))
    standalone = [sys.executable, str(ROOT / "likeflow/domain/audit_proof.py"), str(path), public.hex()]
    run = await asyncio.to_thread(subprocess.run, standalone, capture_output=True, text=True, check=False)
    assert run.returncode == 0 and run.stdout.startswith("OK: "), run.stdout + run.stderr
    leaf = bytearray(base64.b64decode(doc["leaf_b64"]))
    leaf[5] ^= 1  # one changed byte of the prompt
    path.write_text(json.dumps({**doc, "leaf_b64": base64.b64encode(bytes(leaf)).decode()}))
    run = await asyncio.to_thread(subprocess.run, standalone, capture_output=True, text=True, check=False)
    assert run.returncode == 1 and run.stdout.startswith("FAILED: "), run.stdout
    missing = await run_cli(settings, "audit", "prove", "no-such-prompt")
    assert missing.returncode != 0

    # Consistency: the oldest exported checkpoint against the latest on the topic.
    oldest = min((cp for cp in exported if cp.log == f"{topic}/0"), key=lambda cp: cp.size)
    first = tmp_path / "first.json"
    first.write_bytes(oldest.to_json())
    consistent = await run_cli(settings, "audit", "consistency", str(first))
    assert consistent.returncode == 0, consistent.stderr
    proof = json.loads(consistent.stdout)
    assert proof["first"]["size"] == oldest.size < proof["second"]["size"]
    assert "extends itself" in check_document(proof, public)
    with pytest.raises(ProofError):
        changed = proof["path"][0]
        check_document(
            {**proof, "path": [("1" if changed[0] != "1" else "2") + changed[1:], *proof["path"][1:]]}, public
        )
