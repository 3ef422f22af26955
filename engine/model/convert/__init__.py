"""Model conversion (import, graph edits, re-packing of GGUF blocks): everything that needs the `convert`
extra. Serving never imports this package except for an import that must run (``parley model import``,
or the built-in model's first use)."""
