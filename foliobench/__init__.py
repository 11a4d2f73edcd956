"""foliobench: the command line over simcore and workloads."""
