"""``python -m cloudlulc``: the console command, also how torchrun starts training replicas."""

from cloudlulc.cli import main

main()
