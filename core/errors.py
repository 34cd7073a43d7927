"""Typed errors: a UserError becomes a friendly reply; anything else is logged and apologised for."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; str() is a friendly message."""


class BadAudio(UserError):
    """The file could not be decoded as audio."""


class TooCostly(BadAudio):
    """ffmpeg needed more time, processor time or memory than allowed."""


class TooLarge(UserError):
    """The file is bigger than the configured limit."""


class TooLong(UserError):
    """The audio lasts longer than the configured limit."""


class NotFound(UserError):
    """No such sample in this library."""


class NotAllowed(UserError):
    """The user may not do this."""


class QuotaExceeded(UserError):
    """The library is full."""


class Busy(UserError):
    """The job queue is full; try again shortly."""


class RateLimited(UserError):
    """This user sent too many requests too quickly."""


class ModelLoadError(RuntimeError):
    """The CLAP model could not be loaded; the message says how to fix it."""
