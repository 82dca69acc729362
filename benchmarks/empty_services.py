"""Three empty BentoML services chained as service.py's are (entry -> preprocess -> generator),
for `python -m benchmarks.cold_start --floor`: what BentoML's start-up alone costs on this
machine, without any of this project's code, models or runtimes."""

from __future__ import annotations

import bentoml


@bentoml.service(name="empty-generator")
class EmptyGenerator:
    @bentoml.api
    def generate(self, size: int) -> int:
        return size


@bentoml.service(name="empty-preprocess")
class EmptyPreprocess:
    generator = bentoml.depends(EmptyGenerator)

    @bentoml.api
    def prepare(self, size: int) -> int:
        return size


@bentoml.service(name="empty-entry")
class EmptyEntry:
    preprocess = bentoml.depends(EmptyPreprocess)

    @bentoml.api
    def toonify(self, size: int) -> int:
        return size
