"""replyhq-trio: the realtime backend of ReplyHQ, a Socket.IO v4 chat server on Trio."""

from ._version import __version__ as __version__

__all__ = ["__version__"]
