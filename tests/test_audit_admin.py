"""The decision log in the admin: head and anchor shown; audit downloads for those who may read the log."""

from __future__ import annotations

import csv
import io
import json
import zipfile

import pytest
from django.test import Client

from approvals import audit
from ledger import anchors
from ledger.models import Event

URL = "/admin/ledger/event/"
PERIOD = {"since": "2000-01-01T00:00:00Z", "until": "2100-01-01T00:00:00Z"}


@pytest.fixture(autouse=True)
def anchor_file(settings, tmp_path):
    settings.AUDIT_ANCHOR_FILE = tmp_path / "anchors.log"


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_log_page_shows_the_head_and_whether_the_latest_anchor_matches(story, people):
    anchor = anchors.write_anchor()

    page = client_for(people.operator).get(URL)

    assert page.status_code == 200
    text = page.content.decode()
    head = Event.objects.order_by("-position").first()
    assert head.hash in text and anchor.hash in text
    assert "(matches the log)" in text


def test_an_anchor_the_log_no_longer_has_is_flagged(story, people, settings):
    settings.AUDIT_ANCHOR_FILE.write_text(json.dumps({"at": "2026-01-01T00:00:00Z", "position": 10_000, "hash": "ab" * 32}) + "\n")

    text = client_for(people.operator).get(URL).content.decode()

    assert "does NOT match the log" in text


def test_audit_downloads_match_the_export_and_need_the_log_permission(story, people):
    operator = client_for(people.operator)

    jsonl = operator.get("/admin/audit/audit.jsonl", PERIOD)
    rows = [json.loads(line) for line in b"".join(jsonl.streaming_content).decode().splitlines()]
    assert rows == [row for _, row in audit.audit_rows(audit.parse_query(PERIOD["since"], PERIOD["until"], None))]
    lines = list(csv.DictReader(io.StringIO(b"".join(operator.get("/admin/audit/audit.csv", PERIOD).streaming_content).decode())))
    assert {line["object"] for line in lines} == {row["object"] for row in rows}
    pack = zipfile.ZipFile(io.BytesIO(operator.get("/admin/audit/evidence.zip", PERIOD).content))
    assert "evidence_pack.html" in pack.namelist() and "outcomes.csv" in pack.namelist()
    feedback = b"".join(operator.get("/admin/audit/feedback.jsonl", PERIOD).streaming_content).decode().splitlines()
    assert [json.loads(line)["proposal"] for line in feedback] == [str(story.pk)]
    assert operator.get("/admin/audit/audit.jsonl", {"since": "soon"}).status_code == 400

    assert client_for(people.finance1).get("/admin/audit/audit.jsonl", PERIOD).status_code == 403
    assert client_for(people.finance1).get(URL).status_code == 403
