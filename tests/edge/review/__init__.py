"""Tests of `edge review` (a package, so that its conftest is `review.conftest` and does
not shadow the `conftest` that tests/edge's modules import from)."""
