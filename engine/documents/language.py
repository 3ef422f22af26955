"""The language a document is written in, named, so that an instruction can ask for it by name.

A small model summarises and answers a French e-mail in English when the instruction is in English, and
"in the language it is written in" does not fix it (measured: `make eval`, the README's Answer quality);
"Write in French" names what it must do. Identification is py3langid (a maintained langid.py: naive Bayes
over byte n-grams, 97 languages, its model inside the wheel, no network), on the document's beginning.
"""

from __future__ import annotations

import functools
from typing import Any

# Languages named in instructions; any other is left to the model (no directive rather than a wrong one).
NAMES = {
    "ar": "Arabic", "ca": "Catalan", "cs": "Czech", "da": "Danish", "de": "German", "el": "Greek",
    "es": "Spanish", "fi": "Finnish", "fr": "French", "he": "Hebrew", "hi": "Hindi", "hu": "Hungarian",
    "id": "Indonesian", "it": "Italian", "ja": "Japanese", "ko": "Korean", "nl": "Dutch", "no": "Norwegian",
    "pl": "Polish", "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "sv": "Swedish", "th": "Thai",
    "tr": "Turkish", "uk": "Ukrainian", "vi": "Vietnamese", "zh": "Chinese",
}  # fmt: skip
SAMPLE_CHARS = 4000  # enough to be sure; identification reads every byte n-gram of what it is given
MIN_CONFIDENCE = 0.9
MIN_LETTERS = 40  # a table of figures or a one-line note says too little to tell


@functools.cache
def _identifier() -> Any:
    # Loading the model takes a second or two: once per process, on first use.
    from py3langid.langid import MODEL_FILE, LanguageIdentifier  # type: ignore[import-untyped]

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def language_of(text: str) -> str | None:
    """The English name of the language ``text`` is written in ("French"), when it is one of ``NAMES``
    and identification is confident; else None."""
    sample = text[:SAMPLE_CHARS]
    if sum(char.isalpha() for char in sample) < MIN_LETTERS:
        return None
    code, confidence = _identifier().classify(sample)
    return NAMES.get(code) if confidence >= MIN_CONFIDENCE else None


def write_in(text: str) -> str:
    """The sentence asking for an answer in the language of ``text``, or "" for English (the instructions'
    own language: nothing to ask) and for a language not told apart."""
    language = language_of(text)
    if language is None:
        return ""
    return f"Write your answer in {language}."
