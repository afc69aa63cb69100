"""The runner-driver protocol: commands and events round-trip; anything else is ignored."""

from __future__ import annotations

from chaosml.load.protocol import command, event, read_command, read_event


def test_commands_round_trip_and_unknown_words_are_not_commands() -> None:
    assert read_command(command("phase", "fault") + "\n") == ("phase", "fault")
    assert read_command(command("start")) == ("start", "")
    assert read_command("launch missiles") == (None, "missiles")


def test_events_round_trip_and_other_output_is_skipped() -> None:
    kind, fields = read_event(event("phase", name="steady", requests=3)) or ("", {})
    assert kind == "phase" and fields["name"] == "steady" and fields["requests"] == 3
    assert isinstance(fields["t"], float)
    assert read_event("Traceback (most recent call last):") is None
    assert read_event('{"event": "nope"}') is None
    assert read_event("[1, 2]") is None
