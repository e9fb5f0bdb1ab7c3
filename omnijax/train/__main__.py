"""`python -m omnijax.train ...`: the same command as `omnijax train ...` (omnijax/train/main.py),
through the CLI so that a user's mistake is one line on stderr and exit status 2 here too."""

import sys

from omnijax import cli

if __name__ == "__main__":
    sys.exit(cli.main(["train", *sys.argv[1:]]))
