"""Reading plans shallowly: wire-level fields, plan shape, later fingerprints and estimates."""
