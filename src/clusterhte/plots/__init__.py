"""Figure functions: each takes tidy DataFrames and returns a matplotlib Figure."""
