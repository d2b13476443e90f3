from celery import shared_task

from ledger import anchors


@shared_task(name="ledger.tasks.write_anchor")
def write_anchor() -> int | None:
    """Beat: write the decision log's head to the anchor file."""
    anchor = anchors.write_anchor()
    return anchor.position if anchor else None
