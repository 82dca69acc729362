"""An error ends a request without keeping what the request held: the photo's pixels and bytes
are freed when the answer is sent, not at Python's next full garbage collection."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import weakref

import anyio
from PIL import Image

from preprocess import NoFaceFound
from toonify.error_answers import ErrorAnswers, answered_errors
from toonify.request import current_request


@contextlib.contextmanager
def no_garbage_collection():
    """Only reference counts free objects: what a cycle holds stays, as between two of Python's
    full collections in a busy worker."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_an_api_that_raised_from_a_thread_lets_go_of_the_photo():
    """Exceptions that crossed anyio's worker threads sit in a reference cycle; the API's own
    frames (and the thread's) must not keep the photo alive through it."""
    photos: list[weakref.ref] = []

    def prepare() -> None:
        photo = Image.new("RGB", (2000, 1500))
        photos.append(weakref.ref(photo))
        raise NoFaceFound("No face was found.", num_faces=0)

    @answered_errors
    async def toonify_photo() -> None:
        await anyio.to_thread.run_sync(prepare)

    async def call() -> BaseException:
        try:
            await toonify_photo()
        except NoFaceFound as error:
            return error
        raise AssertionError("the API did not raise")

    with no_garbage_collection():
        error = asyncio.run(call())
        assert photos and photos[0]() is None
        assert error.__traceback__ is not None  # the lines for the log are kept


def test_a_cancelled_api_lets_go_of_the_photo_too():
    photos: list[weakref.ref] = []
    holding = asyncio.Event()

    @answered_errors
    async def toonify_photo() -> None:
        photo = Image.new("RGB", (2000, 1500))
        photos.append(weakref.ref(photo))
        holding.set()
        await asyncio.Event().wait()

    async def call() -> None:
        task = asyncio.create_task(toonify_photo())
        await holding.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    with no_garbage_collection():
        asyncio.run(call())
        assert photos and photos[0]() is None


def test_a_context_copied_during_a_request_does_not_keep_its_error():
    """Threads and tasks started during a request copy its context and may outlive it (an idle
    worker thread keeps the last one it ran): the error recorded there must not stay reachable."""
    copied: list[contextvars.Context] = []

    @answered_errors
    async def app(scope, receive, send) -> None:
        copied.append(contextvars.copy_context())
        raise NoFaceFound("No face was found.", num_faces=0)

    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/toonify", "headers": []}
    asyncio.run(ErrorAnswers(app)(scope, receive, send))
    assert sent[0]["status"] == 422
    assert copied[0].run(lambda: current_request().raised) is None
