"""Typed helpers shared by tests and benchmarks: real sparkfleet processes, direct servers."""
