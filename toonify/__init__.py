"""What the services in ``service.py`` are made of, a package per worker plus what they share.

- ``edge``: the entry worker (gateway, request forms, the answer as HTTP, page and API document).
- ``photos``: the preprocessing worker's work around the generator and the answer image.
- ``generation``: the generator worker (ONNX Runtime or OpenVINO) and its batcher.
- Shared: ``settings`` (TOONIFY_* variables), ``schema`` (typed values of the API and between
  services), ``errors`` (every failure, its status and the one place it is answered), ``levels``
  (the degrade ladder), ``calls`` (calls between services), ``metrics`` and ``cost``
  (Prometheus and what serving costs), ``shutdown`` (dependencies drain after the entry), and
  ``bentoml_patches`` (BentoML internals this service relies on, checked at start).
"""
