"""Benchmarks: one module per figure, each runnable as ``python -m benchmarks.<name>``; ``python -m benchmarks``
runs them all. Each writes JSON and markdown to ``benchmarks/results/`` and reports ratios measured side by side
in one run; targets are reported, never asserted."""
