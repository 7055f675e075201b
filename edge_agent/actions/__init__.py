"""Acting locally: the loudspeaker (Mandarin clips, priorities) and relays (spray, strobe), with their feedback."""

from edge_agent.actions.actions import ActionError, Actions
from edge_agent.actions.clips import Clip, ClipError, ClipLibrary
from edge_agent.actions.feedback import FeedbackMonitor
from edge_agent.actions.relays import RelayController
from edge_agent.actions.speaker_queue import Outcome, Priority, SpeakerEvent, SpeakerQueue, SpeakRequest

__all__ = [
    "ActionError",
    "Actions",
    "Clip",
    "ClipError",
    "ClipLibrary",
    "FeedbackMonitor",
    "Outcome",
    "Priority",
    "RelayController",
    "SpeakRequest",
    "SpeakerEvent",
    "SpeakerQueue",
]
