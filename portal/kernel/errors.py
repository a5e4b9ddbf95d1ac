"""The one exception a service raises when it refuses a request."""


class ActionRefused(Exception):
    """The request was refused and nothing was changed; `str()` is the message for the user."""
