"""Anchors: the chain's head written outside the database, so a truncated tail shows.

Beat writes the head (position and hash) to `var/audit-anchors.log` (settings.AUDIT_ANCHOR_FILE)
and to the `hitlgov.audit` logger, which operators ship to their log store. Deleting the newest
events and their history rows leaves a consistent chain, but one shorter than an anchor, or one
whose event at an anchored position has another hash: `verify_audit` reports both.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from ledger.chain import instant

log = logging.getLogger("hitlgov.audit")


@dataclass(frozen=True)
class Anchor:
    at: str
    position: int
    hash: str


def anchor_file() -> Path:
    return Path(getattr(settings, "AUDIT_ANCHOR_FILE", settings.VAR_DIR / "audit-anchors.log"))


def write_anchor() -> Anchor | None:
    """Append the chain's current head to the anchor file (nothing while the log is empty)."""
    from ledger.models import Event

    head = Event.objects.order_by("-position").values_list("position", "hash").first()
    if head is None:
        return None
    anchor = Anchor(at=instant(timezone.now()), position=head[0], hash=head[1])
    line = json.dumps({"at": anchor.at, "position": anchor.position, "hash": anchor.hash})
    with anchor_file().open("a", encoding="utf-8") as stream:
        stream.write(line + "\n")
    log.info("decision log head %s", line)
    return anchor


def read_anchors() -> list[Anchor]:
    """Every anchor written, oldest first; a line that does not parse is skipped (and says so in verify)."""
    path = anchor_file()
    if not path.exists():
        return []
    anchors = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            data = json.loads(line)
            anchors.append(Anchor(at=str(data["at"]), position=int(data["position"]), hash=str(data["hash"])))
        except (ValueError, KeyError, TypeError):
            continue
    return anchors


def latest_anchor() -> Anchor | None:
    anchors = read_anchors()
    return anchors[-1] if anchors else None
