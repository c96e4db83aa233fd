"""The states the station speaks of, each defined once: a job's status, a device's state, a port's status."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    RUNNING = "running"
    INTERRUPTED = "interrupted"  # the station stopped, or the iPad went away mid-step: resumes when it is back
    DONE = "done"
    FAILED = "failed"


class DeviceState(StrEnum):
    """A device's state between steps; while a step runs, its state is the step's name."""

    NEW = "new"
    WAITING = "waiting"  # restarting between steps (after an erase), or asked to be looked at again
    HELD = "held"  # waiting for something outside the station (charge, Apple School Manager, ...): goes on by itself
    INTERRUPTED = "interrupted"
    DONE = "done"
    FAILED = "failed"


class PortStatus(StrEnum):
    """What a port shows across the room."""

    EMPTY = "empty"  # nothing plugged in, or a finished iPad was taken away
    BUSY = "busy"  # a step is running
    WAITING = "waiting"  # the iPad is restarting by itself, or was unplugged mid-job: it resumes when back
    HELD = "held"  # the iPad waits for something outside the station; the message says what; it goes on by itself
    DONE = "done"
    FAILED = "failed"  # it needs a hand: the message says what to do
