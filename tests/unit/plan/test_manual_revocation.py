"""`syncd token revoke TARGET`: a token by fingerprint, or a person by id or username; never someone it may not mean."""

from dataclasses import replace

import pytest

from syncd.core.model import Reason
from syncd.core.plan import plan_manual_revocation
from syncd.errors import InputError
from tests.unit.plan.builders import CLUSTER, account, cluster, credential, known


def revoke(target: str, *people):  # type: ignore[no-untyped-def]
    observed = cluster(*(account(p.id) for p in people))
    return plan_manual_revocation(target, Reason.EXPOSED, {p.id: p for p in people}, {CLUSTER: observed})


def targets(plan) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return [(str(a.kind), a.person_id) for a in plan.actions]


ALICE = known("1001", "alice", cred=replace(credential(secret="syncd-1001-a"), fingerprint="sha256:aa11"))
BOB = known("1002", "bob", cred=replace(credential(secret="syncd-1002-b"), fingerprint="sha256:aa22"))


def test_a_fingerprint_prefix_of_one_token_retires_that_token():
    assert targets(revoke("sha256:aa1", ALICE, BOB)) == [("retire", "1001")]


def test_a_fingerprint_prefix_of_several_tokens_is_refused():
    for prefix in ("sha256:aa", "sha256:"):
        with pytest.raises(InputError, match="start of 2 tokens"):
            revoke(prefix, ALICE, BOB)


def test_a_username_two_people_share_is_refused_and_their_ids_named():
    other_sam, sam = known("2101", "sam"), known("2102", "sam")
    with pytest.raises(InputError, match=r"username of 2 people \(ids 2101, 2102\)"):
        revoke("sam", other_sam, sam)
    assert targets(revoke("2102", other_sam, sam)) == [("revoke", "2102")]


def test_an_id_means_that_person_even_when_it_is_someone_elses_username():
    numbered, named = known("1001", "carol"), known("1003", "1001")
    assert targets(revoke("1001", numbered, named)) == [("revoke", "1001")]
