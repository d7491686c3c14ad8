"""Per-replicate metrics and their aggregation over replicates."""
