"""Workflows: chains, groups and chords of tasks, with exactly-once handoff between steps."""

from .canvas import Chain, Chord, Group, chain, chord, group
from .handles import ChainHandle, ChordHandle, GroupHandle, WorkflowInfo

__all__ = [
    "Chain",
    "ChainHandle",
    "Chord",
    "ChordHandle",
    "Group",
    "GroupHandle",
    "WorkflowInfo",
    "chain",
    "chord",
    "group",
]
