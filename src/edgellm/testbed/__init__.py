"""An emulated edge cluster on one Linux host: network namespaces, veth pairs, a bridge, cgroup
limits and a shaped cloud link (`edgellm testbed up | down`, and `tests/cluster/`)."""
