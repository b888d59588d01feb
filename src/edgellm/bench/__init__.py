"""The testbed's load generator: workloads, load profiles, per-request measurement, resources,
energy and cost, written to a reproducible run directory (see `edgellm bench --help`)."""
