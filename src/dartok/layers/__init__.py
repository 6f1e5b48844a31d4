"""Network layers shared by backbone families (issue 10): :mod:`dartok.layers.mamba`."""
