"""The readers in blocks fixed by the population and the seed, and one fixed way to add blocks up.

A block is a run of at most :data:`BLOCK_READERS` consecutive readers with a
random generator of its own, so its draws depend on nothing but the seed and
its number: not on the other blocks, nor on which process, machine or Dask
worker plays it. Every engine (one process, the process pool, a Dask
cluster) plays the same blocks and adds their outcomes along the same binary
tree in block order, so one seed gives byte-identical results whatever runs
it, even if a total were ever a float whose sum depends on its order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generic, Sequence, TypeVar

import numpy as np

#: Readers per block: a block is one Dask task (about a second of work over 90 days on two presets).
BLOCK_READERS = 2000

T = TypeVar("T")


@dataclass(frozen=True)
class Block:
    """Readers ``first`` to ``first + size - 1`` of the population, drawn from their own generator."""

    number: int
    first: int
    size: int

    def seed(self, seed: int) -> int | np.random.SeedSequence:
        """Block 0 draws from the seed itself (a one-block population draws as it always did);
        block k from the seed's k-th spawned child, independent of every other block."""
        return seed if self.number == 0 else np.random.SeedSequence(seed, spawn_key=(self.number,))


def blocks(readers: int) -> list[Block]:
    """The population's blocks, in order: all full but the last."""
    return [Block(number, first, min(BLOCK_READERS, readers - first))
            for number, first in enumerate(range(0, readers, BLOCK_READERS))]


def pairs(level: Sequence[T], combine: Callable[[T, T], T]) -> list[T]:
    """One level of the tree up: neighbours (2i, 2i+1) combined, a lone last one carried up."""
    return [combine(level[i], level[i + 1]) if i + 1 < len(level) else level[i]
            for i in range(0, len(level), 2)]


class Tree(Generic[T]):
    """The tree that :func:`pairs` builds, filled as blocks finish, in any order.

    Siblings are combined as soon as both are known, so a run that finishes
    blocks roughly in order holds only a few partial sums at a time.
    """

    def __init__(self, leaves: int, combine: Callable[[T, T], T]) -> None:
        self.leaves, self.combine, self.nodes = leaves, combine, {}
        self.root, width = 0, leaves
        while width > 1:
            self.root, width = self.root + 1, (width + 1) // 2

    def add(self, number: int, value: T) -> None:
        """Put block ``number``'s outcome in and climb as far as its siblings are known."""
        level, index, width = 0, number, self.leaves
        while width > 1:
            sibling = index ^ 1
            if sibling < width:
                if (level, sibling) not in self.nodes:
                    break
                other = self.nodes.pop((level, sibling))
                value = self.combine(other, value) if sibling < index else self.combine(value, other)
            level, index, width = level + 1, index // 2, (width + 1) // 2
        self.nodes[(level, index)] = value

    def result(self) -> T:
        """The root, once every block is in."""
        if list(self.nodes) != [(self.root, 0)]:
            raise RuntimeError("not every block is in")
        return self.nodes[(self.root, 0)]
