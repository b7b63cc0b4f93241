"""Command-line tools: demo, model mean, visualize_json_results, ONNX export, benchmark, analysis, plots.

Each module has a ``main(argv=None) -> int`` used by the thin scripts in ``demo/``, ``tools/`` and
``projects/`` and by ``python -m mrdetr.tools.<name>``.
"""
