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


class ConversationBusy(InputRejected):
    """An answer is being written in this conversation and enough messages already wait their turn."""


class Refused(InputRejected):
    """Moderation refused the request; the message is neutral on purpose."""


class GeneratorBusy(ParleyError):
    """The model has as many requests waiting as it accepts."""


class WorkerUnavailable(GeneratorBusy):
    """No `parley worker` is running to take (or take over) the job."""


class JobFailed(ParleyError):
    """The job was set aside after it had stopped the workers that took it too many times."""


class NotReady(Exception):
    """A readiness check's answer: ``str(exc)`` says what is missing (not a person's error)."""


class DocumentRejected(InputRejected):
    """A document that cannot be read; the message says why, for the person who sent it."""


class FetchError(ParleyError):
    """A page could not be fetched; ``str(err)`` is a short reason ("timed out", "HTTP 404", ...)."""

    def __init__(self, reason: str, url: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.url = url
