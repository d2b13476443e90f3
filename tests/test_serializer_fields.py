"""The API's serializers build their fields once per class (approvals.serializers.FieldsBuiltOnce, issue 14),
and every instance still has fields of its own: nothing one request validates or answers reaches another's."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from rest_framework import serializers

from approvals.serializers import FieldsBuiltOnce, ProposalInputSerializer, ProposalSerializer
from tests.conftest import proposal_body


def test_the_proposal_answer_builds_its_model_fields_once(monkeypatch):
    ProposalSerializer().fields  # the class's fields, built by the first instance (or an earlier test)
    built = []
    monkeypatch.setattr(serializers.ModelSerializer, "build_field",
                        lambda self, *args: built.append(args) or pytest.fail("a model field was built again"))

    fields = ProposalSerializer().fields

    assert built == [] and list(fields) == ProposalSerializer.Meta.fields


def test_each_instance_gets_its_own_fields_bound_to_it():
    first, second = ProposalInputSerializer(data={}), ProposalInputSerializer(data={})

    for name in first.fields:
        assert first.fields[name] is not second.fields[name], name
        assert first.fields[name].parent is first and second.fields[name].parent is second, name
    assert first.fields["target"].fields["id"] is not second.fields["target"].fields["id"]
    assert first.fields["evidence"].child.parent is first.fields["evidence"]


def test_submissions_validated_in_turn_keep_their_own_values_and_errors(db, sandbox):
    good, bad = ProposalInputSerializer(data=proposal_body(idempotency_key="good")), \
        ProposalInputSerializer(data=proposal_body(idempotency_key="bad", confidence=3, target={"type": "order"}))

    assert good.is_valid() and not bad.is_valid()
    again = ProposalInputSerializer(data=proposal_body(idempotency_key="again", agent="other-bot"))
    assert again.is_valid(), again.errors

    assert good.validated_data["idempotency_key"] == "good" and good.validated_data["agent"] == "refund-bot"
    assert again.validated_data["agent"] == "other-bot"
    assert set(bad.errors) == {"confidence", "target"} and set(bad.errors["target"]) == {"id"}
    assert good.errors == {} and again.errors == {}


def test_threads_validating_at_once_each_get_their_own_answer(transactional_db, sandbox):
    """Workers may serve requests in threads: the fields all instances are copied from are never bound or used."""
    results: dict[int, object] = {}

    def validate(n: int) -> None:
        body = proposal_body(idempotency_key=f"t{n}", confidence=(0.5 if n % 3 else 7))
        incoming = ProposalInputSerializer(data=body)
        results[n] = incoming.validated_data["idempotency_key"] if incoming.is_valid() else sorted(incoming.errors)

    def worker(start: int) -> None:
        try:
            for n in range(start, 200, 8):
                validate(n)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(start,)) for start in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert results == {n: f"t{n}" if n % 3 else ["confidence"] for n in range(200)}


class _WithMutableDefault(FieldsBuiltOnce, serializers.Serializer):
    tags = serializers.JSONField(default=[], required=False)
    note = serializers.CharField(max_length=10)


def test_a_mutable_default_is_not_shared_between_instances():
    first, second = _WithMutableDefault(data={"note": "a"}), _WithMutableDefault(data={"note": "b"})
    assert first.is_valid() and second.is_valid()

    first.validated_data["tags"].append("only mine")

    assert second.validated_data["tags"] == [] and _WithMutableDefault(data={"note": "c"}).fields["tags"].default == []
