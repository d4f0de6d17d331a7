"""hubml benchmarks: each compares hubml with a baseline measured in the same run."""
