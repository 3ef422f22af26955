"""One family of errors whose message is fit to show a person as it is."""


class ParleyError(Exception):
    """Base class: ``str(err)`` is a short, clear message for the person who asked."""


class ConfigError(ParleyError):
    """A setting is missing or invalid."""


class InputRejected(ParleyError):
    """The request was refused before anything was generated or stored."""


class ContextTooLong(InputRejected):
    """The prompt alone fills the model's context."""


class QuotaExceeded(InputRejected):
    """Too many requests; ``retry_after`` says when to try again."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ModelError(ParleyError):
    """A model cannot be found, imported or loaded."""


class StoreUnavailable(ParleyError):
    """Redis cannot be reached."""


class GenerationCancelled(ParleyError):
    """The answer was stopped before it finished."""
