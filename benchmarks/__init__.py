"""Reproducible benchmarks of programma_sa against a raw-SQL baseline and its peers.

Run everything (prints a markdown table, writes JSON)::

    python -m benchmarks.run --json bench.json

See ``docs/benchmarks.md`` for what each figure measures and how to read it.
"""
