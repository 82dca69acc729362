"""The entry worker: admission, fairness and limits (``gateway``, ``fairness``, ``uploads``), what
the API learns of its request (``context``), the API's two request forms (``forms``), the answer
as HTTP (``responses``), the job routes and ``Prefer`` (``job_desk``), the page and the API
document (``site``, ``openapi``). It never loads an image library or a model runtime (an
import-linter contract)."""
