"""RFC 9162 Merkle trees: the growing tree of one audit partition (its frontier), its roots,
and inclusion and consistency proofs (verified by `likeflow.domain.audit_proof`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from likeflow.domain.audit_proof import EMPTY_ROOT, leaf_hash, node_hash

__all__ = [
    "EMPTY_ROOT",
    "consistency_proof",
    "extend_frontier",
    "frontier_root",
    "inclusion_path",
    "leaf_hash",
    "node_hash",
    "tree_root",
]


def extend_frontier(size: int, frontier: Sequence[bytes], leaves: Iterable[bytes]) -> tuple[int, list[bytes]]:
    """Append leaf hashes to the tree of `size` leaves whose frontier is `frontier` (the roots of
    its perfect subtrees, largest first: one per set bit of `size`); returns the new size and
    frontier. Amortised one node hash per leaf."""
    nodes = list(frontier)
    for h in leaves:
        nodes.append(h)
        s = size
        while s & 1:
            right = nodes.pop()
            nodes[-1] = node_hash(nodes[-1], right)
            s >>= 1
        size += 1
    return size, nodes


def frontier_root(frontier: Sequence[bytes]) -> bytes:
    """The RFC 9162 root of the tree with this frontier: its subtrees folded from the right
    (the shape of MTH for a size that is not a power of two)."""
    if not frontier:
        return EMPTY_ROOT
    root = frontier[-1]
    for h in reversed(frontier[:-1]):
        root = node_hash(h, root)
    return root


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def tree_root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) over leaf hashes (RFC 9162 §2.1.1), as specified: recursive."""
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[0]
    k = _split(n)
    return node_hash(tree_root(leaves[:k]), tree_root(leaves[k:]))


def inclusion_path(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) (RFC 9162 §2.1.3.1): the audit path of leaf `index`, from the leaf up."""
    n = len(leaves)
    if not 0 <= index < n:
        raise ValueError(f"leaf {index} is not in a tree of {n} leaves")
    if n == 1:
        return []
    k = _split(n)
    if index < k:
        return [*inclusion_path(index, leaves[:k]), tree_root(leaves[k:])]
    return [*inclusion_path(index - k, leaves[k:]), tree_root(leaves[:k])]


def consistency_proof(first: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) (RFC 9162 §2.1.4.1): that the tree of the first `first` leaves is a
    prefix of the tree of all of them. Empty for first == 0 or first == n."""
    n = len(leaves)
    if not 0 <= first <= n:
        raise ValueError(f"size {first} is not inside a tree of {n} leaves")
    if first in (0, n):
        return []
    return _subproof(first, leaves, True)


def _subproof(m: int, leaves: Sequence[bytes], complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [tree_root(leaves)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, leaves[:k], complete), tree_root(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], False), tree_root(leaves[:k])]
