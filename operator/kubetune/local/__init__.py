"""The local runner: run a FineTuneJob (and serve it) on this machine, with no cluster and no Docker."""
