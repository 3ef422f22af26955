"""Documents in, text out: PDF, DOCX, HTML, e-mail and plain-text files read into one `Document`, under
limits that make hostile files (zip bombs, huge or damaged files) a clear refusal, not an outage."""

from engine.documents.document import Document, DocumentLimits, Kind
from engine.documents.extract import extract, read_document

__all__ = ["Document", "DocumentLimits", "Kind", "extract", "read_document"]
