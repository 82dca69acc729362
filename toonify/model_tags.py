"""Which stored models the services load, decided where every worker may import it (bentoml
only: no model runtime)."""

from __future__ import annotations

import logging

import bentoml

from .settings import DEFAULT_DETECTOR_MODEL, FALLBACK_DETECTOR_MODEL

logger = logging.getLogger(__name__)


def stored_detector(tag: str) -> str:
    """``tag``; or MTCNN where ``tag`` is the default (MediaPipe's face models) and the store
    lacks it, as on a machine whose build-defaults could not reach the package index."""
    if tag != DEFAULT_DETECTOR_MODEL:
        return tag
    try:
        bentoml.models.get(tag)
    except bentoml.exceptions.NotFound:
        logger.warning(
            "%s is not in the model store (python -m model_store build-defaults fetches it from "
            "the package index); detecting faces with %s",
            tag,
            FALLBACK_DETECTOR_MODEL,
        )
        return FALLBACK_DETECTOR_MODEL
    return tag
