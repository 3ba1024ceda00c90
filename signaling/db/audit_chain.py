"""The audit trail's hash chains, its head file, and their verification.

Every entry carries ``prev_hash`` (the hash of the entry before it in the whole trail: the global
chain) and ``consultation_prev_hash`` (the hash of the consultation's entry before it; NULL for an
entry of no consultation, such as a refused token), and ``hash``: SHA-256 over the canonical
serialisation of all its other columns, the two previous hashes included (``entry_hash``). Editing
an entry changes its hash; deleting or inserting one breaks the next entry's link.

Deleting the *last* entries leaves a shorter chain that is still whole, so the writer also keeps
the head — the newest entry's ``seq`` and ``hash`` — in a separate file in the data directory
(``ANCHOR_FILENAME``, mode 0600), rewritten after every batch; ``verify`` checks that the trail
still holds that entry, with that hash.

Limits: the hashes are not keyed. Whoever can write both the database and the head file can
rewrite the trail from any point on and recompute every hash after it; whoever can write the
database alone can still append well-formed entries after the head. Detecting that needs a copy
of the head outside this machine: ship ``endolink audit verify``'s head line (or the file) to an
external, append-only log (docs/operations.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from persistence.files import Sync, write_bytes_atomic

ANCHOR_FILENAME = "audit-head.json"
GENESIS = ""
"The previous hash of the first entry (of the trail, and of each consultation)."
HASHED_COLUMNS = (
    "seq",
    "consultation_id",
    "at",
    "identity",
    "name",
    "role",
    "action",
    "recording_id",
    "detail",
    "count",
    "prev_hash",
    "consultation_prev_hash",
)
"What an entry's hash covers, in this order; its row is these columns followed by ``hash``."
_VERSION = "endolink-audit-1"


def entry_hash(fields: Sequence[Any]) -> str:
    """SHA-256 (hex) of an entry's ``HASHED_COLUMNS`` values: a JSON array, ASCII only, no spaces,
    led by a version tag, so any reader can recompute it."""
    canonical = json.dumps([_VERSION, *fields], ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class Head:
    """The newest entry the writer committed."""

    seq: int
    hash: str


def write_anchor(path: Path, head: Head) -> None:
    """The head file, private to the service user, replaced atomically and fsynced."""
    data = json.dumps({"seq": head.seq, "hash": head.hash}).encode("ascii")
    write_bytes_atomic(path, data, sync=Sync.FULL, mode=0o600)


def read_anchor(path: Path) -> Head | None:
    """The head file's entry; None when there is none (or it is unreadable: a problem too)."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        data = json.loads(path.read_bytes())
        return Head(int(data["seq"]), str(data["hash"]))
    return None


@dataclass(frozen=True)
class Checked:
    """How far the chains are verified: the state a later ``verify`` resumes from."""

    seq: int = 0
    hash: str = GENESIS
    entries: int = 0
    heads: Mapping[str, str] = field(default_factory=dict)
    "Each consultation's newest verified hash."


START = Checked()


@dataclass(frozen=True)
class Verdict:
    """What ``verify`` found: intact, or the first bad entry and what is wrong with it."""

    entries: int
    head: Head | None
    seq: int | None = None
    "The first bad entry (for a deleted tail: the newest entry the head file names)."
    problem: str | None = None
    complete: bool = True
    "False when the check stopped early (a cap): entries after ``head`` are not checked yet."
    checked: Checked = START
    "Where the next check resumes (the last good entry)."

    @property
    def ok(self) -> bool:
        return self.problem is None

    def to_json(self) -> dict[str, Any]:
        head = None if self.head is None else {"seq": self.head.seq, "hash": self.head.hash}
        return {
            "ok": self.ok,
            "entries": self.entries,
            "head": head,
            "seq": self.seq,
            "problem": self.problem,
            "complete": self.complete,
        }


def verify(
    rows: Iterable[Sequence[Any]],
    anchor: Head | None,
    start: Checked = START,
    end: bool = True,
) -> Verdict:
    """Check every entry (``HASHED_COLUMNS`` + ``hash``, in ``seq`` order) after ``start``: its
    own hash, its link to the previous entry of the trail and of its consultation; then, when the
    rows reach the ``end`` of the trail, the head file. Stops at the first problem. Read
    ``anchor`` *before* the rows: the writer updates it only after a commit, so an entry it names
    is always in a later read of the database. Resuming from ``start`` trusts the entries before
    it (a head file naming one of those is not compared: a full check from ``START`` is)."""
    previous, last_seq, entries = start.hash, start.seq, start.entries
    heads = dict(start.heads)
    anchored = start.hash if anchor is not None and anchor.seq == start.seq else None
    for row in rows:
        *fields, stored = row
        seq, cid = int(fields[0]), fields[1]
        prev_hash, consultation_prev = fields[-2], fields[-1]
        if stored is None or entry_hash(fields) != stored:
            return _bad(entries, last_seq, previous, seq, f"entry {seq} was changed")
        if prev_hash != previous:
            return _bad(
                entries,
                last_seq,
                previous,
                seq,
                f"entry {seq} does not follow entry {last_seq}: an entry between them was "
                "deleted, or one was inserted",
            )
        if cid is not None and consultation_prev != heads.get(cid, GENESIS):
            return _bad(
                entries,
                last_seq,
                previous,
                seq,
                f"entry {seq} does not follow its consultation's previous entry: one was "
                "deleted or inserted",
            )
        if anchor is not None and seq == anchor.seq:
            anchored = stored
        previous, last_seq, entries = stored, seq, entries + 1
        if cid is not None:
            heads[cid] = stored
    head = Head(last_seq, previous) if entries else None
    checked = Checked(last_seq, previous, entries, heads)
    if not end:
        return Verdict(entries, head, complete=False, checked=checked)
    if anchor is None:
        if entries:
            return Verdict(
                entries,
                head,
                last_seq,
                f"the head file ({ANCHOR_FILENAME}) is missing: entries at the end may have "
                "been deleted",
            )
        return Verdict(0, None)
    if anchor.seq > last_seq:
        return Verdict(
            entries,
            head,
            anchor.seq,
            f"the trail ends at entry {last_seq} but entry {anchor.seq} was written: entries at "
            "the end were deleted",
        )
    if anchor.seq >= start.seq and anchored != anchor.hash:
        return Verdict(
            entries,
            head,
            anchor.seq,
            f"entry {anchor.seq} is not the entry written as number {anchor.seq}: the trail was "
            "rewritten from there",
        )
    return Verdict(entries, head, checked=checked)


def _bad(entries: int, last_seq: int, previous: str, seq: int, problem: str) -> Verdict:
    """The verdict on a bad entry ``seq`` (those before it are good)."""
    return Verdict(entries, Head(last_seq, previous) if entries else None, seq, problem)
