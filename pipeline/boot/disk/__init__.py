"""``[boot] via = "disk"``: boot what ``doit install`` wrote from a disk image, through the
real bootloader in its MBR (SeaBIOS, GRUB, the entry, Xen, dom0), twice on one disk so that
the one-shot entry and the fallback to the known-good entry are proven by a reboot.

:mod:`.root` is the Debian root the image holds, :mod:`.image` makes the image (and mounts it
for what runs in its root), :mod:`.grub2` and :mod:`.grub_legacy` install the loader,
:mod:`.console` reads the entries off the serial console, :mod:`.boots` runs the boots and
says what each took."""
