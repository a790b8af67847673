"""Thin Kubeflow components, one per pipeline step, each a call into the ``semivdn`` library/CLI.

The step modules hold plain Python functions (Kubeflow serializes their source
into the step, so their imports live inside them); :mod:`components.build` turns
them into lightweight components on the project image. This package module
imports nothing, so a running step that imports :mod:`components.step` does not
pull in the component-building machinery.
"""
