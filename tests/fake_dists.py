"""Fake installed distributions, for testing plugin discovery for real.

:func:`fake_dist` writes what ``pip install`` would leave in site-packages:
the plugin's modules and a ``NAME-VERSION.dist-info`` directory with
``METADATA`` (Name, Version) and an ``entry_points.txt`` in the ``queuectl``
group. With that directory on ``sys.path`` (a unit test) or on
``PYTHONPATH`` (the CLI in a subprocess), ``importlib.metadata`` finds the
distribution exactly as an installed one.
"""

from __future__ import annotations

import textwrap
from pathlib import Path


def fake_dist(root: Path, name: str, entry_points: dict[str, str], modules: dict[str, str],
              version: str = "1.2.3") -> Path:
    """Write distribution ``name`` ``version`` into ``root``: its
    ``queuectl`` entry points (entry-point name -> ``module[:attr]``) and its
    modules (module name -> source, dedented). Returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "\n".join(f"{k} = {v}" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[queuectl]\n{lines}\n")
    for mod, source in modules.items():
        (root / f"{mod}.py").write_text(textwrap.dedent(source))
    return root
