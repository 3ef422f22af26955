"""Retrieval building blocks: fetching web pages safely, cutting documents into passages, ranking them.

Import the modules themselves (`engine.retrieval.fetch`, `.passages`, `.rank`): each pulls in only what it
needs, so code that splits passages does not load the HTTP client or the ranking library.
"""
