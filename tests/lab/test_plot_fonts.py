"""A name in a script the installed fonts lack (CJK) saves without a warning per glyph."""

from __future__ import annotations

import warnings

from matplotlib.figure import Figure

from bnlab.lab.plots import save


def test_cjk_title_saves_without_glyph_warnings(tmp_path):
    fig = Figure()
    fig.add_subplot().set_title("実験 bn,seed=1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        png = save(fig, tmp_path, "cjk")
    assert png.exists() and (tmp_path / "cjk.svg").exists()
    assert not [w for w in caught if "missing from font" in str(w.message)]
