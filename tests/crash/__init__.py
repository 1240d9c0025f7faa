"""The crash-consistency suite: doit killed by SIGINT, SIGTERM and SIGKILL at random moments
of each stage (harness.py, the sites in scenarios.py), and injected faults (test_faults.py)."""
