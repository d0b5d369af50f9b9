"""How ledger events read on a terminal."""

from datetime import UTC, datetime

from syncd import render
from syncd.ledger.tables import EventRow


def test_the_text_log_tells_two_people_with_one_username_apart():
    def event(seq: int, person_id: str) -> EventRow:
        return EventRow(seq=seq, at=datetime(2026, 11, 25, 12, tzinfo=UTC), person_id=person_id, username="alex",
                        cluster="dev", action="issue", reason="joiner", prev_hash="", hash="")

    first, second = render.event_text(event(1, "1001")), render.event_text(event(2, "u-2002"))
    assert "issue alex (id 1001) on dev (joiner) ok" in first
    assert "issue alex (id u-2002) on dev (joiner) ok" in second
