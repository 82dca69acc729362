"""Three BentoML services chained as service.py's (entry -> preprocess -> generator), carrying
the bytes ours carry and doing nothing else, for `python -m benchmarks.overhead --floor`: what
BentoML's serving costs an image on this machine, without any of this project's code.

The entry takes the photo as BentoML's own multipart upload (a raw body has no parser in
BentoML; ours, toonify/edge/forms.py, is a little cheaper), sends its bytes to the preprocessing
service, which sends one 512x512 crop to the generator and gets it back, and answers 60 KB, about
a face's JPEG. ``BARE_CHAIN_CROP_SIDE`` makes the crop smaller, to split what the bytes cost from
what a request costs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import bentoml
import numpy as np
from bentoml.validators import ContentType

SIDE = int(os.environ.get("BARE_CHAIN_CROP_SIDE", "512"))
CROPS = np.zeros((1, SIDE, SIDE, 3), np.uint8)
ANSWER_BYTES = 60_000
# As service.py's: one connection pool for the life of the worker (BentoML renews it every 100
# calls by default, under calls still reading their answers).
STEADY_CONNECTIONS = {"max_requests": 2**31 - 1, "max_age": 1e9}


@bentoml.service(name="bare-generator", runner_connection=STEADY_CONNECTIONS)
class BareGenerator:
    @bentoml.api
    async def generate(self, crops: np.ndarray) -> np.ndarray:
        return crops


@bentoml.service(name="bare-preprocess", runner_connection=STEADY_CONNECTIONS)
class BarePreprocess:
    generator = bentoml.depends(BareGenerator)

    @bentoml.api
    async def toonify_photo(self, photo: bytes) -> bytes:
        toons = await self.generator.to_async.generate(crops=CROPS)
        if toons.shape != CROPS.shape:
            raise ValueError(f"the generator answered {toons.shape}, not {CROPS.shape}")
        return photo[:ANSWER_BYTES].ljust(ANSWER_BYTES, b"\0")


@bentoml.service(name="bare-entry", runner_connection=STEADY_CONNECTIONS)
class BareEntry:
    preprocess = bentoml.depends(BarePreprocess)

    @bentoml.api
    async def toonify(self, photo: Annotated[Path, ContentType("image/*")]) -> bytes:
        return await self.preprocess.to_async.toonify_photo(photo=photo.read_bytes())
