"""A stand-in classifier for PARLEY_MODERATION=tests.fakes.moderation:flag_forbidden."""


def flag_forbidden(text: str) -> str | None:
    return "forbidden word" if "forbidden" in text.lower() else None
