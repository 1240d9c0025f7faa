"""``[target]``: a test box reached with ssh. :mod:`.ssh` is the transport (the OpenSSH
client as argv), :mod:`.box` what only the box runs (depmod, initramfs, update-grub, the
one-shot), :mod:`.deploy` ``doit install`` to the box: stage locally, send what changed;
:mod:`.examine` which box the device checks read (its /sys over ssh);
:mod:`.roundtrip` ``doit boot`` on the box (:mod:`.console` follows its console).
"""

from pipeline.target.deploy import deploy, local_files, staged, staging_root
from pipeline.target.examine import examined
from pipeline.target.roundtrip import boot
from pipeline.target.ssh import Ssh, sh

__all__ = ["Ssh", "boot", "deploy", "examined", "local_files", "sh", "staged", "staging_root"]
