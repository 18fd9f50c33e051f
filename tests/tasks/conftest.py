"""Fixtures for task tests: a fresh registry per test."""

from __future__ import annotations

import pytest

from programma_sa import JobQueue, TaskRegistry

from ..app import Job


@pytest.fixture
def registry() -> TaskRegistry:
    return TaskRegistry(JobQueue(Job))
