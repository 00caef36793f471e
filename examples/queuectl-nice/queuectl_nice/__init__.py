"""An example executor: commands run under ``nice`` and ``ionice``."""
