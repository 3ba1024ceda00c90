"""Server messages as values: ``to_json()`` is exactly the documented wire object."""

from __future__ import annotations

from recorder.recordings import RecordingEvent, RecordingState
from relay import ConsultationId, FeedEvent, FeedName, FeedState, OfflineReason
from relay.ladder import Quality
from relay.picture_quality import Hint, Level, Verdict
from relay.selector import QualityChange
from signaling.auth.grants import Grant, Role
from signaling.ws.messages import (
    AnnotationUpdate,
    Chat,
    FeedUpdate,
    FreezeState,
    FreezeUpdate,
    PictureUpdate,
    Pong,
    PrivacyUpdate,
    QualityUpdate,
    RecordingUpdate,
    Welcome,
    You,
)

CID = ConsultationId("abcdef123")


def test_keyword_fields_and_enums_go_on_the_wire_as_documented() -> None:
    chat = Chat("surgeon-1", "Dr. Who", Role.SURGEON, "hello", "2025-01-31T09:15:02.123+00:00")
    assert chat.to_json() == {
        "type": "chat",
        "from": "surgeon-1",
        "name": "Dr. Who",
        "role": "surgeon",
        "text": "hello",
        "ts": "2025-01-31T09:15:02.123+00:00",
    }
    event = FeedEvent(CID, FeedName.ENDOSCOPE, FeedState.LIVE, "clinic-1")
    feed = FeedUpdate.of(event).to_json()
    assert feed.pop("reason") is None  # live: nothing to explain
    assert feed == {"type": "feed", "feed": "endoscope", "state": "live", "identity": "clinic-1"}
    assert type(feed["state"]) is str
    ended = FeedEvent(CID, FeedName.ENDOSCOPE, FeedState.OFFLINE, None, OfflineReason.ENDED)
    assert FeedUpdate.of(ended).to_json()["reason"] == "ended"
    assert Pong().to_json() == {"type": "pong"}


def test_an_annotation_update_carries_only_what_its_op_changed() -> None:
    mark = {"id": "m1"}
    assert AnnotationUpdate("add", "s", annotation=mark).to_json() == {
        "type": "annotation",
        "op": "add",
        "annotation": mark,
        "by": "s",
    }
    removed = AnnotationUpdate("remove", "s", id="m1").to_json()
    assert removed == {"type": "annotation", "op": "remove", "id": "m1", "by": "s"}
    assert AnnotationUpdate("clear", "s").to_json() == {
        "type": "annotation",
        "op": "clear",
        "by": "s",
    }
    archived = AnnotationUpdate("archive", None, count=2).to_json()
    assert archived == {"type": "annotation", "op": "archive", "count": 2, "by": None}
    restored = AnnotationUpdate("restore", "s", annotations=[mark]).to_json()
    assert restored == {"type": "annotation", "op": "restore", "annotations": [mark], "by": "s"}


def test_welcome_nests_the_recording_message_and_plain_freeze_state() -> None:
    grant = Grant.for_role(Role.CLINIC, CID, "clinic-1", 60, name="Ward 3")
    recording = RecordingUpdate.of(RecordingEvent(CID, RecordingState.STOPPED, None))
    welcome = Welcome(
        You.of(grant, grant.name), [], {}, None, [], FreezeState(False, None, None), recording
    )
    assert welcome.to_json() == {
        "type": "welcome",
        "you": {
            "identity": "clinic-1",
            "name": "Ward 3",
            "role": "clinic",
            "may_publish": True,
            "may_annotate": True,
        },
        "participants": [],
        "feeds": {},
        "consent": None,
        "annotations": [],
        "freeze": {"frozen": False, "snapshot": None, "by": None},
        "recording": {
            "type": "recording",
            "state": "stopped",
            "recording_id": None,
            "reason": None,
            "segment": None,
        },
        "archived": 0,
        "stills": {
            "type": "stills",
            "active": False,
            "reason": None,
            "by": None,
            "still": None,
            "asked": 0,
        },
        "out_of_body": False,
        "picture": None,
    }
    assert PrivacyUpdate(True).to_json() == {"type": "privacy", "out_of_body": True}
    resumed = FreezeUpdate(False, None, "surgeon-1").to_json()
    assert resumed == {
        "type": "freeze",
        "frozen": False,
        "snapshot": None,
        "by": "surgeon-1",
        "reason": None,
    }
    released = FreezeUpdate(False, None, "surgeon-1", "left").to_json()
    assert released["reason"] == "left"


def test_a_quality_change_goes_on_the_wire_with_its_session() -> None:
    change = QualityChange(CID, "s1", "surgeon-1", Quality.P360, True, "connection")
    assert QualityUpdate.of(change).to_json() == {
        "type": "quality",
        "session": "s1",
        "quality": "360p",
        "automatic": True,
        "reason": "connection",
    }


def test_a_picture_update_names_its_level_and_hints_as_plain_strings() -> None:
    verdict = Verdict(Level.POOR, (Hint.BLURRED, Hint.TOO_DARK), 0.12)
    assert PictureUpdate.of(verdict).to_json() == {
        "type": "picture",
        "level": "poor",
        "hints": ["blurred", "too-dark"],
        "focus": 0.12,
    }
