"""Every ordering of a study's data sets: the chains of a sequential-transfer study (Yoon et al. 2024).

``all_orderings(["a", "b", "c"])`` gives the 15 non-empty sequences without repetition: the 3 single data
sets, the 6 ordered pairs and the 6 ordered triples. Chains that share a prefix share its trained stages
(:mod:`musclelab.studies.chain`), so the 15 chains need 15 stage trainings, not 3 + 12 + 18 = 33.
"""
from __future__ import annotations

from collections.abc import Sequence
from itertools import permutations

from musclelab.errors import ConfigError


def all_orderings(names: Sequence[str]) -> list[tuple[str, ...]]:
    """All non-empty ordered sequences of distinct ``names``, shortest first, then in the order of
    :func:`itertools.permutations` over ``names`` as given (deterministic). ``n`` names give
    ``sum_k n!/(n-k)!`` sequences (3 -> 15, 4 -> 64)."""
    names = [str(n) for n in names]
    if len(set(names)) != len(names):
        raise ConfigError(f"data set names must be distinct, got {names}")
    return [seq for k in range(1, len(names) + 1) for seq in permutations(names, k)]


def count_stage_slots(orderings: Sequence[Sequence[str]]) -> int:
    """Stage trainings without a prefix cache: the total length of all sequences (33 for 3 names)."""
    return sum(len(s) for s in orderings)
