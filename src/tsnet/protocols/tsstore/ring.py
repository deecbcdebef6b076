"""A store's fixed footprint: ts-store's ring of ``num_blocks`` blocks, as
bookkeeping only (the bytes live in tsnet's storage).

ts-store preallocates ``num_blocks`` blocks of ``data_block_size`` bytes and
packs records into them (spec §5.4): a record takes a 24-byte header plus its
payload; it joins the head block while that fits, else opens the next block,
and one that cannot fit in an empty block spans several.  When the block after
the head is the tail, the tail block (and the continuation blocks after it) is
reclaimed, and its records are gone.  `Ring` replays exactly those rules, so
every ack's ``block_num`` and every ``stats`` field is what ts-store would
answer, and it says which records a write reclaims.

Records are placed in strictly increasing time, so blocks hold increasing
times and "the records of the reclaimed blocks" is "every record at or before
the newest of them": a time, which storage applies (`Batch.reclaim_ns`).
Soft-deleted records keep their space, as in ts-store.  A ring is rebuilt
from the stored records (`Ring.replay`): the oldest record opened its block,
and packing from there is deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

#: bytes of a block header and of an object (record) header
BLOCK_HEADER = 24
OBJECT_HEADER = 24
MIN_BLOCK_SIZE = 64


class RingError(ValueError):
    """A record the store cannot hold; str() is the reply's text."""


@dataclass
class _Block:
    continuation: bool
    newest_ns: int  # the newest record whose bytes are in this block


@dataclass(frozen=True)
class Placement:
    """Where a record went: ``block`` (ts-store's ``block_num``), and the time at
    or before which records were reclaimed to make room (None: nothing)."""

    block: int
    reclaim_ns: int | None


def valid_block_size(n: int) -> bool:
    """ts-store's rule: a power of 2 and at least 64 bytes."""
    return n >= MIN_BLOCK_SIZE and n & (n - 1) == 0


class Ring:
    """The block bookkeeping of one store.  Not thread-safe; the reactor owns it."""

    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks < 1 or not valid_block_size(block_size):
            raise ValueError(f"bad ring {num_blocks} x {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.reset()

    def reset(self, at: int = 0) -> None:
        """Empty, the next record opening block ``at``."""
        self.head = at
        self.tail = at
        self.write_offset = 0
        self.newest_ns = 0  # the newest time placed: the next must be later
        self._used: dict[int, _Block] = {}
        self._reclaimed: int | None = None

    @property
    def capacity(self) -> int:
        """The largest payload the ring can hold at all (spec §5.4's bound)."""
        return self.num_blocks * (self.block_size - BLOCK_HEADER) - OBJECT_HEADER

    @property
    def active_blocks(self) -> int:
        """Blocks from tail to head inclusive (1 for an empty store, as ts-store)."""
        return (self.head - self.tail) % self.num_blocks + 1

    def check(self, time_ns: int, size: int) -> None:
        """Raise RingError unless a record of ``size`` bytes at ``time_ns`` fits."""
        if time_ns <= 0:
            raise RingError("invalid timestamp")
        if time_ns <= self.newest_ns:
            raise RingError("timestamp must be greater than newest entry")
        if size > self.capacity:
            raise RingError(f"object of {size} bytes exceeds the store's capacity"
                            f" of {self.capacity} bytes")

    def place(self, time_ns: int, size: int) -> Placement:
        """Account for a record (after `check`); where it goes and what it reclaims."""
        self.check(time_ns, size)
        self._reclaimed = None
        need = OBJECT_HEADER + size
        usable = self.block_size - BLOCK_HEADER
        if self.write_offset and need <= self.block_size - self.write_offset:
            block = self.head
            self.write_offset += need
            self._used[block].newest_ns = time_ns
        elif need <= usable:
            block = self.head = self._allocate()
            self._used[block] = _Block(False, time_ns)
            self.write_offset = BLOCK_HEADER + need
        else:
            first_chunk = usable - OBJECT_HEADER
            spans = 1 + -(-(size - first_chunk) // usable)
            block = self.head = self._allocate()
            self._used[block] = _Block(False, time_ns)
            for _ in range(spans - 1):
                self.head = self._allocate()
                self._used[self.head] = _Block(True, time_ns)
            # ts-store's own arithmetic (it ignores the first block's header),
            # kept so that the records after this one land where they do there
            self.write_offset = BLOCK_HEADER + (size % usable or usable)
        # ts-store's reclaim stops at the head, which can leave the tail on the
        # last continuation of a record already reclaimed: that block holds
        # nothing, and the true oldest block is the one after it (the records
        # land in the same blocks either way, and a rebuilt ring agrees)
        while self.tail != self.head and self._used[self.tail].continuation:
            self._reclaim(self.tail)
            self.tail = (self.tail + 1) % self.num_blocks
        self.newest_ns = time_ns
        return Placement(block, self._reclaimed)

    def _allocate(self) -> int:
        if self.head not in self._used:
            return self.head  # the store's first record
        nxt = (self.head + 1) % self.num_blocks
        if nxt != self.tail:
            return nxt
        reclaimed = self.tail
        self._reclaim(reclaimed)
        self.tail = (reclaimed + 1) % self.num_blocks
        while self.tail != self.head and self._used.get(self.tail, _Block(False, 0)).continuation:
            self._reclaim(self.tail)
            self.tail = (self.tail + 1) % self.num_blocks
        return reclaimed

    def _reclaim(self, block: int) -> None:
        gone = self._used.pop(block, None)
        if gone is not None:
            self._reclaimed = max(self._reclaimed or 0, gone.newest_ns)

    @classmethod
    def replay(cls, num_blocks: int, block_size: int,
               records: Iterable[tuple[int, int, int]]) -> Ring:
        """The ring that holds ``records``: (time_ns, size, block) of every
        stored record, soft-deleted ones included, oldest first."""
        ring = cls(num_blocks, block_size)
        first = True
        for time_ns, size, block in records:
            if first:
                ring.reset(block % num_blocks)
                first = False
            ring.place(time_ns, size)
        return ring
