"""Audit log v2: RFC 9162 Merkle math, proofs, batch records, signed checkpoints and the log
verifier (likeflow/domain/merkle.py, audit_tree.py; the standalone checker audit_proof.py)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from likeflow.domain import audit_proof
from likeflow.domain.audit import GENESIS, AuditError, BreakReason, extend
from likeflow.domain.audit_proof import (
    CONSISTENCY_FORMAT,
    INCLUSION_FORMAT,
    ProofError,
    check_document,
    verify_consistency,
    verify_inclusion,
)
from likeflow.domain.audit_tree import (
    EMPTY_HEAD,
    Checkpoint,
    LogVerifier,
    TreeHead,
    decode_batch,
    decode_checkpoint,
    load_signing_key,
    public_key_bytes,
    seal,
    seal_all,
    sign_checkpoint,
    tree_head_of,
)
from likeflow.domain.merkle import (
    consistency_proof,
    extend_frontier,
    frontier_root,
    inclusion_path,
    leaf_hash,
    node_hash,
    tree_root,
)

KEY = load_signing_key("11" * 32)
PUBLIC = public_key_bytes(KEY)
LOG = "audit-log/0"


def naive_root(data: list[bytes]) -> bytes:
    """MTH written from RFC 9162 §2.1.1 over the raw leaf data, independently of merkle.py."""
    if not data:
        return hashlib.sha256(b"").digest()
    if len(data) == 1:
        return hashlib.sha256(b"\x00" + data[0]).digest()
    k = 1
    while k * 2 < len(data):
        k *= 2
    return hashlib.sha256(b"\x01" + naive_root(data[:k]) + naive_root(data[k:])).digest()


def leaves(n: int) -> list[bytes]:
    return [leaf_hash(f"leaf-{i}".encode()) for i in range(n)]


def flip(b: bytes, i: int = 0) -> bytes:
    return b[:i] + bytes([b[i] ^ 1]) + b[i + 1 :]


# RFC 6962 test data (certificate-transparency's merkle tree tests): the inputs and the roots of
# the trees of their first 1..8 leaves.
CT_INPUTS = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                        "606162636465666768696a6b6c6d6e6f")]  # fmt: skip
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def test_the_empty_tree_and_the_rfc_6962_test_vectors() -> None:
    assert tree_root([]).hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert frontier_root([]) == tree_root([])
    for n in range(1, 9):
        hashes = [leaf_hash(d) for d in CT_INPUTS[:n]]
        assert tree_root(hashes).hex() == CT_ROOTS[n - 1], n
        assert frontier_root(extend_frontier(0, [], hashes)[1]).hex() == CT_ROOTS[n - 1], n
        assert naive_root(CT_INPUTS[:n]).hex() == CT_ROOTS[n - 1], n


def test_the_frontier_gives_the_rfc_root_for_every_size_and_any_batching() -> None:
    data = [f"r{i}".encode() for i in range(70)]
    size, frontier = 0, list[bytes]()
    for n in range(1, 71):
        size, frontier = extend_frontier(size, frontier, [leaf_hash(data[n - 1])])
        assert size == n and len(frontier) == n.bit_count()
        assert frontier_root(frontier) == naive_root(data[:n]) == tree_root([leaf_hash(d) for d in data[:n]])


@given(st.lists(st.binary(max_size=20), max_size=40), st.lists(st.integers(1, 7), max_size=40))
@settings(max_examples=100, deadline=None)
def test_batch_records_build_the_same_tree_however_the_records_are_batched(
    data: list[bytes], cuts: list[int]
) -> None:
    data = [d.replace(b"\n", b" ") for d in data]
    head, values, i = EMPTY_HEAD, [], 0
    for cut in [*cuts, len(data)]:
        if i >= len(data):
            break
        value, head = seal(head, [("prompt", data[i : i + cut])])
        values.append(value)
        i += cut
    assert head.size == len(data)
    assert bytes.fromhex(head.root) == naive_root(data)
    verifier = LogVerifier(LOG)
    for offset, value in enumerate(values):
        assert verifier.feed(offset, value) is None
    result = verifier.result()
    assert result.ok and result.size == len(data) and result.root == head.root


def test_inclusion_proofs_verify_for_every_leaf_of_every_tree_up_to_16_and_fail_on_any_change() -> None:
    for n in range(1, 17):
        hashes = leaves(n)
        root = tree_root(hashes)
        for m in range(n):
            path = inclusion_path(m, hashes)
            verify_inclusion(m, n, hashes[m], path, root)
            with pytest.raises(ProofError):
                verify_inclusion(m, n, flip(hashes[m]), path, root)
            with pytest.raises(ProofError):
                verify_inclusion(m, n, hashes[m], path, flip(root, 31))
            for j in range(len(path)):
                for byte in (0, 17, 31):
                    bad = [*path[:j], flip(path[j], byte), *path[j + 1 :]]
                    with pytest.raises(ProofError):
                        verify_inclusion(m, n, hashes[m], bad, root)
            if n > 1:
                with pytest.raises(ProofError):  # another index, a shorter or longer path
                    verify_inclusion((m + 1) % n, n, hashes[m], path, root)
                with pytest.raises(ProofError):
                    verify_inclusion(m, n, hashes[m], path[:-1], root)
            with pytest.raises(ProofError):
                verify_inclusion(m, n, hashes[m], [*path, root], root)


def test_consistency_proofs_verify_for_every_pair_up_to_16_and_fail_on_any_change() -> None:
    hashes = leaves(16)
    for n in range(1, 17):
        new_root = tree_root(hashes[:n])
        for m in range(0, n + 1):
            old_root = tree_root(hashes[:m])
            proof = consistency_proof(m, hashes[:n])
            verify_consistency(m, n, old_root, new_root, proof)
            if 0 < m < n:
                assert proof
                with pytest.raises(ProofError):
                    verify_consistency(m, n, flip(old_root), new_root, proof)
                with pytest.raises(ProofError):
                    verify_consistency(m, n, old_root, flip(new_root, 5), proof)
                for j in range(len(proof)):
                    bad = [*proof[:j], flip(proof[j], 9), *proof[j + 1 :]]
                    with pytest.raises(ProofError):
                        verify_consistency(m, n, old_root, new_root, bad)
                with pytest.raises(ProofError):  # a tree that is not an extension of the old one
                    other = tree_root([*hashes[: m - 1], flip(hashes[m - 1]), *hashes[m:n]])
                    verify_consistency(m, n, old_root, other, proof)
    with pytest.raises(ProofError):
        verify_consistency(3, 3, tree_root(hashes[:3]), flip(tree_root(hashes[:3])), [])
    with pytest.raises(ProofError):
        verify_consistency(5, 4, tree_root(hashes[:5]), tree_root(hashes[:4]), [])


def test_a_batch_record_round_trips_and_names_its_head() -> None:
    value, head = seal(EMPTY_HEAD, [("prompt", [b'{"a":1}', b'{"a":2}']), ("feedback", [b'{"f":1}'])])
    header, *records = value.split(b"\n")
    assert records == [b'{"a":1}', b'{"a":2}', b'{"f":1}']
    doc = orjson.loads(header)
    assert (doc["v"], doc["first"], doc["size"], doc["kinds"], doc["prev"]) == (2, 0, 3, "ppf", "0" * 64)
    batch = decode_batch(value)
    assert batch.records == tuple(records) and batch.hash == head.hash
    assert tree_head_of(value) == head
    with pytest.raises(AuditError):
        seal(EMPTY_HEAD, [("prompt", [b"two\nlines"])])
    with pytest.raises(AuditError):
        tree_head_of(value.replace(b'"kinds":"ppf"', b'"kinds":"pff"'))
    # A v1 entry is a head too: the tree is empty, the first v2 record links to its hash.
    [entry], v1_head = extend(GENESIS, "prompt", [b'{"a":0}'])
    assert tree_head_of(entry) == TreeHead(0, (), v1_head.hash)


def test_seal_all_cuts_big_groups_into_records_of_a_bounded_size() -> None:
    records = [b"x" * 100] * 50
    values, head = seal_all(EMPTY_HEAD, [("prompt", records[:20]), ("feedback", records[20:])], 1000)
    assert len(values) > 5 and all(len(v.split(b"\n", 1)[1]) <= 1000 for v in values)
    assert head.size == 50 and bytes.fromhex(head.root) == naive_root(records)
    assert "".join(decode_batch(v).kinds for v in values) == "p" * 20 + "f" * 30


def build_log(
    batches: int = 5, per: int = 3, start: TreeHead = EMPTY_HEAD
) -> tuple[list[bytes], list[TreeHead]]:
    values, heads, head = [], [], start
    for b in range(batches):
        value, head = seal(head, [("prompt", [f'{{"prompt_id":"p{b}-{i}"}}'.encode() for i in range(per)])])
        values.append(value)
        heads.append(head)
    return values, heads


def walk(values: list[bytes], checkpoints: list[Checkpoint]) -> tuple[BreakReason | None, int]:
    verifier = LogVerifier(LOG, checkpoints, PUBLIC)
    for offset, value in enumerate(values):
        verifier.feed(offset, value)
    result = verifier.result()
    brk = result.first_break
    return (brk.reason, brk.offset) if brk else (None, result.checkpoints)


def test_the_verifier_checks_every_checkpoint_and_names_each_kind_of_tampering() -> None:
    values, heads = build_log()
    cps = [sign_checkpoint(KEY, LOG, heads[1], 1000), sign_checkpoint(KEY, LOG, heads[4], 2000)]
    assert walk(values, cps) == (None, 2)
    # Truncation: the last batch is gone; it leaves a valid shorter log but a checkpoint covers it.
    assert walk(values[:4], cps) == (BreakReason.TRUNCATED, 4)
    # A rewritten tail with every hash recomputed: internally consistent, not what was signed.
    forged, _ = build_log(2, 3, heads[2])
    forged = [seal(heads[2], [("prompt", [b'{"prompt_id":"other"}'])])[0], *forged[1:]]
    forged_tail = [*values[:3], seal(heads[2], [("prompt", [b'{"prompt_id":"other"}'] * 3)])[0]]
    forged_tail.append(seal(tree_head_of(forged_tail[-1]), [("prompt", [b'{"x":1}'] * 3)])[0])
    assert walk(forged_tail, cps) == (BreakReason.REWRITTEN, 4)
    # A record altered in place: its records no longer give its root, or its header its hash.
    altered = values[2].replace(b'"prompt_id":"p2-1"', b'"prompt_id":"p2-9"')
    assert walk([*values[:2], altered, *values[3:]], cps) == (BreakReason.BAD_ROOT, 2)
    assert walk([*values[:2], values[2].replace(b'"kinds":"ppp"', b'"kinds":"ppf"'), *values[3:]], cps)[
        0
    ] in {BreakReason.BAD_HASH}
    # Reordering two batches, and a missing batch (in the middle or before the end).
    assert walk([values[0], values[2], values[1], *values[3:]], cps) == (BreakReason.REORDERED, 1)
    assert walk([values[0], *values[2:]], cps) == (BreakReason.MISSING_BATCH, 1)
    # A fork: a zombie's record extends the head the owner already extended.
    zombie, _ = seal(heads[1], [("prompt", [b'{"prompt_id":"zombie"}'])])
    assert walk([*values[:3], zombie, *values[3:]], cps) == (BreakReason.FORK, 3)
    # A zombie's signed checkpoint of another tree at the same size; a checkpoint forged with
    # another key; a checkpoint whose signature no longer covers its fields.
    zombie_cp = sign_checkpoint(KEY, LOG, tree_head_of(zombie), 1500)
    other_at_6 = sign_checkpoint(KEY, LOG, TreeHead(6, heads[1].frontier, zombie_cp.head), 1600)
    assert walk(values, [*cps, other_at_6])[0] == BreakReason.BAD_CHECKPOINT
    stranger = sign_checkpoint(load_signing_key("22" * 32), LOG, heads[4], 3000)
    assert walk(values, [*cps, stranger])[0] == BreakReason.BAD_CHECKPOINT
    changed = Checkpoint(**{**cps[1].as_dict(), "time_ms": 2001})  # type: ignore[arg-type]
    assert walk(values, [changed])[0] == BreakReason.BAD_CHECKPOINT
    # Checkpoints of another log are not this log's.
    assert walk(values, [sign_checkpoint(KEY, "audit-log/1", heads[4], 1)]) == (None, 0)


def test_a_v1_chain_moves_to_v2_at_a_recorded_point_and_keeps_verifying() -> None:
    entries, v1_head = extend(GENESIS, "prompt", [b'{"a":1}', b'{"a":2}'])
    start = tree_head_of(entries[-1])
    values, heads = build_log(2, 2, start)
    assert decode_batch(values[0]).prev == v1_head.hash  # the first v2 record names the last v1 entry
    log = [*entries, *values]
    cps = [sign_checkpoint(KEY, LOG, heads[-1], 5)]
    verifier = LogVerifier(LOG, cps, PUBLIC)
    for offset, value in enumerate(log):
        assert verifier.feed(offset, value) is None
    result = verifier.result()
    assert result.ok and result.v1.count == 2 and result.size == 4 and result.count == 6
    assert result.checkpoints == 1 and result.signed_size == 4
    # A v2 start that does not name the last v1 entry is a break; a v1 entry after v2 is one too.
    assert walk([entries[0], *values], [])[0] == BreakReason.PREV_MISMATCH
    assert walk([*log, entries[0]], [])[0] == BreakReason.VERSION
    # Foreign records are skipped as before.
    verifier = LogVerifier(LOG)
    for offset, value in enumerate([*log[:3], b"not an entry", *log[3:]]):
        verifier.feed(offset, value)
    assert verifier.result().intact and verifier.result().foreign_count == 1


def test_checkpoints_encode_and_decode_and_keys_load_from_hex_or_pem() -> None:
    from cryptography.hazmat.primitives import serialization

    cp = sign_checkpoint(KEY, LOG, build_log(1)[1][0], 42)
    assert decode_checkpoint(cp.to_json()) == cp
    with pytest.raises(AuditError):
        decode_checkpoint(b'{"log":"x"}')
    pem = KEY.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    assert public_key_bytes(load_signing_key(pem)) == PUBLIC
    for bad in ("", "abc", "zz" * 32):
        with pytest.raises(AuditError):
            load_signing_key(bad)


def inclusion_document(index: int, data: list[bytes]) -> dict[str, object]:
    head = seal(EMPTY_HEAD, [("prompt", data)])[1]
    cp = sign_checkpoint(KEY, LOG, head, 7)
    hashes = [leaf_hash(d) for d in data]
    return {
        "format": INCLUSION_FORMAT, "log": LOG, "leaf_index": index, "tree_size": len(data),
        "leaf_b64": base64.b64encode(data[index]).decode(), "leaf_hash": hashes[index].hex(),
        "path": [p.hex() for p in inclusion_path(index, hashes)], "checkpoint": cp.as_dict(),
    }  # fmt: skip


def test_the_standalone_checker_accepts_proofs_and_fails_for_any_changed_byte(tmp_path: Path) -> None:
    data = [f'{{"prompt_id":"p{i}","user_id":"v1.ab"}}'.encode() for i in range(11)]
    doc = inclusion_document(6, data)
    assert "leaf 6" in check_document(doc, PUBLIC)
    text = json.dumps(doc).encode()
    # Every character of the document that carries evidence: the proof must fail when it changes.
    failures = 0
    for i, c in enumerate(text):
        if chr(c) in '{}[]":, ' or not chr(c).isalnum():
            continue
        changed = text[:i] + (b"1" if c != ord("1") else b"2") + text[i + 1 :]
        try:
            check_document(json.loads(changed), PUBLIC)
        except ProofError:
            failures += 1
            continue
        key = text[max(0, text.rfind(b'"', 0, text.rfind(b":", 0, i)) - 12) : i + 1]
        pytest.fail(f"changing byte {i} ({key!r}) still verifies")
    assert failures > 500
    with pytest.raises(ProofError):
        check_document(doc, public_key_bytes(load_signing_key("33" * 32)))
    path = tmp_path / "proof.json"
    path.write_text(json.dumps(doc))
    assert audit_proof.main([str(path), PUBLIC.hex()]) == 0
    path.write_text(json.dumps({**doc, "leaf_index": 5}))
    assert audit_proof.main([str(path), PUBLIC.hex()]) == 1


def test_the_standalone_checker_checks_consistency_between_two_checkpoints() -> None:
    data = [f"r{i}".encode() for i in range(13)]
    old, _ = seal(EMPTY_HEAD, [("prompt", data[:5])])
    new, head = seal(tree_head_of(old), [("prompt", data[5:])])
    first, second = sign_checkpoint(KEY, LOG, tree_head_of(old), 1), sign_checkpoint(KEY, LOG, head, 2)
    proof = [p.hex() for p in consistency_proof(5, [leaf_hash(d) for d in data])]
    doc = {"format": CONSISTENCY_FORMAT, "first": first.as_dict(), "second": second.as_dict(), "path": proof}
    assert "extends itself at size 5" in check_document(doc, PUBLIC)
    with pytest.raises(ProofError):
        check_document({**doc, "path": [proof[0][:-1] + "0", *proof[1:]]}, PUBLIC)
    with pytest.raises(ProofError):
        forked, forked_head = seal(tree_head_of(old), [("prompt", [b"x", *data[6:]])])
        check_document({**doc, "second": sign_checkpoint(KEY, LOG, forked_head, 3).as_dict()}, PUBLIC)


def test_node_hash_is_domain_separated_from_leaf_hash() -> None:
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert node_hash(a, b) != leaf_hash(a + b)
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()


def test_the_signing_key_setting_says_what_to_set_when_it_is_missing_or_bad(tmp_path: Path) -> None:
    from config import ConfigError, load_settings
    from likeflow.connections import audit_signing_key

    missing = load_settings({}, audit_signing_key_file=str(tmp_path / "none"))
    with pytest.raises(ConfigError, match="LIKEFLOW_AUDIT_SIGNING_KEY_FILE"):
        audit_signing_key(missing)
    with pytest.raises(ConfigError, match="64 hex digits") as raised:
        audit_signing_key(load_settings({}, audit_signing_key="not-a-key-" + "x" * 30))
    assert "x" * 30 not in str(raised.value), "the message never shows the key"
    path = tmp_path / "audit-signing-key"
    path.write_text("11" * 32 + "\n")
    path.chmod(0o600)
    assert public_key_bytes(audit_signing_key(load_settings({}, audit_signing_key_file=str(path)))) == PUBLIC
