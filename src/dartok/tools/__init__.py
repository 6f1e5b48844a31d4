"""Measuring and looking at DART: MAC counts, speed, accuracy comparisons, partition figures.

- :mod:`dartok.tools.flops`: MAC counting with fvcore (``count_macs``, ``MacReport``, ...);
- :mod:`dartok.tools.bench`: speed, scaling, the tokenizer's per-step timing, result files;
- :mod:`dartok.tools.compare`: presets of runs trained with one recipe, result tables, plots;
- :mod:`dartok.tools.viz`: partition figures;
- :mod:`dartok.tools.predict`: class predictions for image files from a checkpoint.

The submodules are imported on use (``import dartok.tools`` alone loads none of them, so
matplotlib and fvcore stay unloaded until needed).
"""
