"""Tooling around the service, never imported by it: the test and benchmark harness (``served``),
podman's flags for this kind of sandbox (``containers``), the spend cap CLI (``budget``) and the
CPU every figure is measured on (``machine``)."""
