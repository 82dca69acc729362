"""The entry worker: admission and limits (``gateway``), the API's two request forms (``forms``),
the answer as HTTP (``responses``), the web page and the API document (``site``, ``openapi``).
It never loads an image library or a model runtime (an import-linter contract)."""
