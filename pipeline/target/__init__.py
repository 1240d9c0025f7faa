"""``[target]``: a test box reached with ssh. :mod:`.ssh` is the transport (the OpenSSH
client as argv), :mod:`.box` what only the box runs (depmod, initramfs, update-grub, the
one-shot), :mod:`.deploy` ``doit install`` to the box: stage locally, send what changed.
"""

from pipeline.target.deploy import deploy, local_files, staged, staging_root
from pipeline.target.ssh import Ssh, sh

__all__ = ["Ssh", "deploy", "local_files", "sh", "staged", "staging_root"]
