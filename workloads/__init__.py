"""foliobench workloads: parameterized sequences of memory operations run against a backend."""
