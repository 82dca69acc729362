"""What the services in ``service.py`` are made of, as plain modules.

- ``settings``: TOONIFY_* environment variables.
- ``options``: what a request may ask for (pydantic types shared by the API and its callers).
- ``errors``: every failure, with its HTTP status and the JSON body that says what to do.
- ``gateway``: ASGI middleware in front of the API: admission, body limits and deadline,
  billing, bounded request metrics, every error in the documented JSON form.
- ``answer``: the answer image: paste back or a face sheet, encoded, within the output budget.
- ``generator``: any ONNX image-to-image generator on ONNX Runtime or OpenVINO.
- ``batching``: the generator's batcher.
- ``metrics``, ``cost``: Prometheus metrics and what serving costs under a price profile.
- ``shutdown``: dependency services drain after the entry service, on SIGTERM.
- ``served``: a real ``bentoml serve`` in a subprocess, for tests, benchmarks and the load test.
"""
