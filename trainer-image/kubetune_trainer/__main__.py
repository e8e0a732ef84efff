"""`python -m kubetune_trainer`: the trainer image's ENTRYPOINT."""

from kubetune_trainer.cli import main

raise SystemExit(main())
