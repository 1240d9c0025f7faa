"""Helpers the tests share; pytest hooks and fixtures stay in tests/conftest.py.

- tools: the repository root, CI or not, ``need`` (a tool on PATH), ``free_port``;
- upstreams: real hg (served), git and tarball upstreams, and the Xen-like tree;
- doit: ``run_doit`` (doit as users run it; forked for fast tests) and ``write_config``;
- realkernel, kernel_tree: the slow tests' real kernel build and Linux tree, cached in
  ``$XENPIPE_TEST_CACHE``; boot: recorded consoles and private boots of that kernel;
- fake_kernel, fake_kconfig: a kbuild look-alike (fake_kconfig.py is copied into its trees);
- sysfs_trees: recorded sysfs/procfs trees; install, patches: their stages' fixtures as data.
"""
