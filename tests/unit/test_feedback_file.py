"""The bulk feedback file reader: bad lines are reported by line, the rest kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.feedback_job import read_event_file


def test_bad_lines_are_reported_with_their_line_and_the_rest_kept(tmp_path: Path) -> None:
    path = tmp_path / "feedback.csv"
    path.write_text(
        "kind,appointment_id,referral_id,outcome,status,occurred_at,outreach_call\n"
        "appointment,AP1,,attended,,2025-02-01 09:00,true\n"
        "appointment,AP2,,maybe,,2025-02-01 10:00,\n"
        "referral,,RF1,,completed,2025-02-02 11:00,\n"
        "appointment,,,no_show,,2025-02-01 10:00,\n"
        "appointment,AP3,,no_show,,not a time,\n"
        "visit,AP4,,no_show,,2025-02-01 10:00,\n"
    )
    events, rejected, lines = read_event_file(path)
    assert rejected == [
        "line 3: outcome must be one of attended, no_show, cancelled",
        "line 5: appointment_id is missing",
        "line 6: occurred_at is not a date-time",
        "line 7: kind must be appointment or referral",
    ]
    assert lines == [2, 4]
    assert events["kind"].tolist() == ["appointment", "referral"]
    assert events["outreach_call"].tolist() == [True, None]
    assert str(events["occurred_at"].iloc[1]) == "2025-02-02 11:00:00"


def test_unknown_columns_are_refused_with_the_allowed_ones(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_text("kind,patient_name\nappointment,x\n")
    with pytest.raises(ValueError, match="unexpected: patient_name"):
        read_event_file(path)
