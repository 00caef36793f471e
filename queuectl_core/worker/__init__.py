"""Workers: the loop that claims, runs and records jobs (``loop``), its
optional claim-ahead strategy (``ahead``), housekeeping and recovery
(``housekeeping``, ``held``), the supervisor that keeps N workers alive
(``supervisor``), stop signals (``signals``) and process helpers
(``procs``)."""
