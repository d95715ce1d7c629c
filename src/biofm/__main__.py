"""``python -m biofm`` (and ``torchrun ... -m biofm train``): the command-line interface."""

from biofm.cli.main import main

raise SystemExit(main())
