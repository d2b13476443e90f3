"""Publishing matrices: a second board member, one live version, frozen once published."""

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from policies.models import ApprovalMatrix, MatrixStatus
from policies.services import live_matrix, new_draft, publish_matrix, submit_matrix
from tests.conftest import demo_spec, matrix_spec, rule


def test_the_author_cannot_publish_their_own_matrix(people, sandbox):
    draft = new_draft(demo_spec(), people.board1)
    submit_matrix(draft, people.board1)

    with pytest.raises(PermissionDenied):
        publish_matrix(draft, people.board1)
    assert draft.status == MatrixStatus.SUBMITTED


def test_only_board_members_publish(people, sandbox):
    draft = new_draft(demo_spec(), people.board1)
    submit_matrix(draft, people.board1)

    with pytest.raises(PermissionDenied):
        publish_matrix(draft, people.finance1)


def test_publishing_retires_the_live_version_and_takes_effect_at_once(publish, people, sandbox):
    first = publish(demo_spec())
    assert live_matrix().version == first.version

    second = publish(matrix_spec(rule("everything-blocked", "block")))

    assert ApprovalMatrix.objects.get(pk=first.pk).status == MatrixStatus.RETIRED
    assert live_matrix().version == second.version
    assert ApprovalMatrix.objects.filter(status=MatrixStatus.PUBLISHED).count() == 1


def test_a_matrix_whose_embedded_tests_fail_cannot_be_submitted(people, sandbox):
    spec = demo_spec()
    broken = matrix_spec(*spec.rules[:1], tests=spec.tests)
    draft = new_draft(broken, people.board1)

    with pytest.raises(ValidationError):
        submit_matrix(draft, people.board1)
    assert draft.status == MatrixStatus.DRAFT


def test_a_stored_matrix_reads_back_as_the_same_spec(people, sandbox):
    from dataclasses import replace

    from policies.matrices import to_spec

    spec = demo_spec()
    draft = new_draft(spec, people.board1)

    assert to_spec(draft) == replace(spec, version=draft.version)


def test_submitting_and_publishing_are_recorded_with_who_did_it(publish, people, sandbox):
    published = publish(demo_spec())

    rows = list(published.history.order_by("history_date"))

    assert [(row.status, row.history_user) for row in rows[-2:]] == [
        ("submitted", people.board1), ("published", people.board2),
    ]
