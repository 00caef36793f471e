"""queuectl's web dashboard: ``queuectl serve`` (pages, ``/metrics``, a JSON
API under ``/api/``), added to the command line through the
``queuectl_cli_commands`` hook. See this distribution's README."""
